"""Upload benchmark: `upload_file` vs a bare `BlobClient.upload_blob(f, max_concurrency=4)`.

Both upload the same local file to the same local Azurite, alternating, a few rounds each; the
median times are compared. `upload_file` does more work per byte: a whole-file MD5 (stored as
the blob's Content-MD5) and, by default, a per-block Content-MD5 that the service verifies. On
Azurite the service's verification runs on the same CPUs as the client, so the benchmark also
times `upload_file` with `verify_blocks=False` to show what that check costs here.

    .venv/bin/python benchmarks/upload.py            # 100 and 256 MiB
    .venv/bin/python benchmarks/upload.py 64 512     # other sizes
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from azexport_assets.demo.azurite import DEV_KEY, start_azurite
from azexport_assets.storage import BlobStorage, upload_file

MiB = 1024 * 1024


def _write_random_file(path: Path, size_mib: int) -> None:
    with path.open("wb") as out:
        for _ in range(size_mib):
            out.write(os.urandom(MiB))


def run(size_mib: int, rounds: int = 3) -> dict:
    """Time both uploads of a `size_mib` file against a fresh Azurite; print and return results."""
    azurite = start_azurite()
    workdir = Path(tempfile.mkdtemp(prefix="azexport-bench-"))
    try:
        path = workdir / "data.bin"
        _write_random_file(path, size_mib)
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        service.create_container("bench")
        storage = BlobStorage(azurite.account_url, credential_type="key", secret=DEV_KEY)
        unverified = BlobStorage(
            azurite.account_url, credential_type="key", secret=DEV_KEY, verify_blocks=False
        )
        ours: list[float] = []
        ours_unverified: list[float] = []
        bare: list[float] = []
        with storage.container("bench") as container, unverified.container("bench") as fast:
            for index in range(rounds):
                started = time.perf_counter()
                upload_file(container, f"ours-{index}.bin", path, content_type="a/b")
                ours.append(time.perf_counter() - started)

                started = time.perf_counter()
                upload_file(fast, f"unverified-{index}.bin", path, content_type="a/b")
                ours_unverified.append(time.perf_counter() - started)

                blob = service.get_blob_client("bench", f"bare-{index}.bin")
                started = time.perf_counter()
                with path.open("rb") as stream:
                    blob.upload_blob(stream, max_concurrency=4, overwrite=True)
                bare.append(time.perf_counter() - started)

            # Memory: Python allocations while uploading (blocks in flight), measured untimed.
            tracemalloc.start()
            upload_file(container, "ours-traced.bin", path, content_type="a/b")
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        service.close()
    finally:
        azurite.stop()
        for child in workdir.iterdir():
            child.unlink()
        workdir.rmdir()
    ours_s, unverified_s, bare_s = (statistics.median(t) for t in (ours, ours_unverified, bare))
    result = {
        "size_mib": size_mib,
        "upload_file_s": round(ours_s, 3),
        "upload_file_unverified_s": round(unverified_s, 3),
        "bare_upload_blob_s": round(bare_s, 3),
        "ratio": round(ours_s / bare_s, 2),
        "ratio_unverified": round(unverified_s / bare_s, 2),
        "upload_file_mib_s": round(size_mib / ours_s, 1),
        "bare_mib_s": round(size_mib / bare_s, 1),
        "upload_file_peak_python_mib": round(peak / MiB, 1),
        "rounds": rounds,
    }
    print(
        f"{size_mib:>5} MiB  upload_file {ours_s:6.2f}s ({result['upload_file_mib_s']} MiB/s)  "
        f"verify_blocks=False {unverified_s:6.2f}s  "
        f"bare upload_blob {bare_s:6.2f}s ({result['bare_mib_s']} MiB/s)  "
        f"ratio {result['ratio']:.2f} (unverified {result['ratio_unverified']:.2f})  "
        f"peak Python memory {result['upload_file_peak_python_mib']} MiB"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 256], help="sizes in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for size in args.sizes:
        run(size, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
