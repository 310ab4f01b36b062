"""Upload benchmark: `upload_file` vs a bare `BlobClient.upload_blob(f, max_concurrency=4)`.

Both upload the same local file to the same local Azurite, alternating, a few rounds each; the
median times are compared. `upload_file` does more work per byte (whole-file MD5, per-block
Content-MD5 that the service verifies), so a ratio a little above 1 is expected.

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
from dagster_azure.blob import AzureBlobStorageKeyCredential

from azexport_assets.demo.azurite import DEV_KEY, start_azurite
from azexport_assets.storage import ExportBlobStorage, upload_file

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
        storage = ExportBlobStorage(
            account_url=azurite.account_url,
            credential=AzureBlobStorageKeyCredential(key=DEV_KEY),
        )
        ours: list[float] = []
        bare: list[float] = []
        with storage.container("bench") as container:
            for index in range(rounds):
                started = time.perf_counter()
                upload_file(container, f"ours-{index}.bin", path, content_type="a/b")
                ours.append(time.perf_counter() - started)

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
    result = {
        "size_mib": size_mib,
        "upload_file_s": round(statistics.median(ours), 3),
        "bare_upload_blob_s": round(statistics.median(bare), 3),
        "ratio": round(statistics.median(ours) / statistics.median(bare), 2),
        "upload_file_mib_s": round(size_mib / statistics.median(ours), 1),
        "bare_mib_s": round(size_mib / statistics.median(bare), 1),
        "upload_file_peak_python_mib": round(peak / MiB, 1),
        "rounds": rounds,
    }
    print(
        f"{size_mib:>5} MiB  upload_file {result['upload_file_s']:7.2f}s "
        f"({result['upload_file_mib_s']} MiB/s)  "
        f"bare upload_blob {result['bare_upload_blob_s']:7.2f}s "
        f"({result['bare_mib_s']} MiB/s)  ratio {result['ratio']:.2f}  "
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
