-- Customers with their order totals: a CRM table (DuckDB) joined with order files (Parquet).
SELECT
    c.customer_id,
    c.first_name,
    c.last_name,
    c.email,
    c.phone_number,
    c.age,
    c.is_active,
    c.lifetime_value,
    c.signup_date,
    c.last_seen_at,
    c.country,
    c.notes,
    coalesce(o.order_count, 0) AS order_count,
    coalesce(o.order_total, 0) AS order_total
FROM crm.customers AS c
LEFT JOIN (
    SELECT customer_id, count(*) AS order_count, sum(amount) AS order_total
    FROM orders
    GROUP BY customer_id
) AS o USING (customer_id)
