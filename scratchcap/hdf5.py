"""Opening HDF5 files that users hand us, with one clear error for missing and damaged files."""
from __future__ import annotations


def open_readonly(path, error, what: str):
    """h5py.File(path, "r"), raising ``error`` that names ``what`` the file should have been."""
    import h5py

    try:
        return h5py.File(str(path), "r")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise error(f"{path} is not a readable HDF5 file (truncated, or not HDF5?): {exc}") from None
