"""Command-line arguments that fail before any work, in one line.

* :class:`ArgParser`: ``argparse`` whose errors are one line, ``prog: error: message``, exit 2
  (argparse's own print the usage first).
* :func:`number`: an argparse ``type`` for an integer or float in a range; the error names the
  argument (argparse adds it) and the allowed range.
* :func:`check_writable`, :func:`check_device`: output paths and devices, checked up front.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch

from .errors import InputError

__all__ = ["ArgParser", "number", "check_writable", "check_device"]


class ArgParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line errors (``prog: error: ...``, exit status 2)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def check_output(self, path, folder: bool = False) -> None:
        """:func:`check_writable` before any work; its failure is this parser's one-line error."""
        if path is None:
            return
        try:
            check_writable(path, folder)
        except InputError as e:
            self.exit(2, f"{self.prog}: error: {e}\n")


def _num(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _range_text(lo, hi, lo_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if lo is None:
        return f"<= {_num(hi)}"
    return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}]"


def number(kind: type = int, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """An argparse ``type``: ``kind`` (int or float) within ``[lo, hi]`` (``(lo, hi]`` if
    ``lo_open``); finite. The error reads ``argument --x: 5 is not ...: expected an integer >= 32``."""
    what = "an integer" if kind is int else "a number"
    expect = f"expected {what} {_range_text(lo, hi, lo_open)}" if lo is not None or hi is not None else f"expected {what}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {expect}") from None
        bad = not math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo))
        if bad or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text}: {expect}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def check_writable(path: str | os.PathLike, folder: bool = False) -> Path:
    """Fail now, not after the work, if ``path`` (a file, or a folder if ``folder``) cannot be
    written: its nearest existing ancestor must be a writable folder, and the path itself, if it
    exists, of the right kind and writable. Creates nothing.

    Raises:
        InputError: naming the path and the problem.
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise InputError(f"{path}: exists and is not a folder")
        if not folder and path.is_dir():
            raise InputError(f"{path}: is a folder; expected a file name")
        if not os.access(path, os.W_OK):
            raise InputError(f"{path}: not writable")
        return path
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{path}: cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot be created: {parent} is not writable")
    return path


def check_device(name: str | None) -> torch.device:
    """``None`` -> cuda when available, else cpu; otherwise a device that exists here."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name}: not a device (expected cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: not supported (expected cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
