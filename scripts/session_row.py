"""The measured part of a session's row in ``checkpoints/README.md``'s table, from a checkpoint.

    python scripts/session_row.py runs/pytorch-vdsr/checkpoints/step-0078000 --since 74500

A run that spans CPU sessions gets one table row per session: the steps it covered, its time and
rate, the range of its summed loss, and each validation (raw weights, then the moving average).
All of that is in the newest checkpoint's ``train_state.json`` (``history``: ``loss`` and ``time``
as ``[step, value]`` pairs at every read point, ``val`` as ``{set: {scale: [[step, dB], ...]}}``
with ``"<set> EMA"`` for the moving average), so this prints it instead of a session copying it
from the log by hand. The machine, precision, lr and how the session ended (what ``max_minutes``
or a later commit did) stay the session's words.

Prints one line, ``STEPS (TIME) | VALIDATION``, e.g.::

    74,500 to 78,000 (128 min; 2.19 s a step, 58 patches/s, validation and saves included) | The summed loss
    347 to 368. 37.32 / 33.53 / 31.23; 37.354 / 33.537 / 31.204 at 75,000. ... **37.37 / ... at
    78,000** (9.98M patch-steps)

The time is the run's wall clock (``history.time``: training, validation and checkpoints) between
``--since`` and the checkpoint's step. Exit status 2 with one line when the checkpoint has no
``train_state.json`` or no step after ``--since``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vdsr.cliargs import ArgParser  # noqa: E402


def _at(pairs: list, step: int) -> float | None:
    """The value logged at ``step`` in a ``[[step, value], ...]`` history, or None."""
    return next((v for s, v in pairs if s == step), None)


def session_row(state: dict, since: int) -> str:
    """The row's measured text for steps ``since`` (exclusive) to ``state["step"]`` of a train_state."""
    end, hist = state["step"], state["history"]
    if end <= since:
        raise ValueError(f"the checkpoint is at step {end}, not after --since {since}")
    batch = state["patches_seen"] // end  # end > since >= 0
    times = hist.get("time", [])
    t_end = _at(times, end)
    t_end = state["seconds"] if t_end is None else t_end
    t_start = 0.0 if since == 0 else _at(times, since)  # a run's clock starts at 0 at step 0
    steps = f"{since:,} to {end:,}"
    if t_start is None:  # the session began before time was logged, or --since is not a read point
        head = steps
    else:
        sec = t_end - t_start
        head = (f"{steps} ({sec / 60:.0f} min; {sec / (end - since):.2f} s a step, "
                f"{(end - since) * batch / sec:.0f} patches/s, validation and saves included)")  # fmt: skip
    losses = [v for s, v in hist.get("loss", []) if since < s <= end]
    parts = [f"The summed loss {min(losses):.0f} to {max(losses):.0f}." if losses else "No loss logged."]
    val = hist.get("val", {})
    names = [n for n in val if not n.endswith(" EMA")]
    for name in names:
        raw, ema = val[name], val.get(f"{name} EMA", {})
        prefix = f"{name} " if len(names) > 1 else ""
        scales = sorted(raw, key=int)
        at = sorted({s for sc in scales for s, _ in raw[sc] if since < s <= end})
        for i, step in enumerate(at):
            text = " / ".join(f"{_at(raw[sc], step):.2f}" for sc in scales)
            if ema:
                text += "; " + " / ".join(f"{_at(ema[sc], step):.3f}" for sc in scales if sc in ema)
            text += f" at {step:,}"
            last = i == len(at) - 1
            if last:
                text = f"**{text}** ({step * batch / 1e6:.2f}M patch-steps)"
            parts.append(f"{prefix}{text}.")
    return f"{head} | {' '.join(parts).rstrip('.')}"


def main(argv: list[str] | None = None) -> int:
    p = ArgParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint folder (its train_state.json is read)")
    p.add_argument("--since", type=int, required=True, help="the step the session resumed from")
    args = p.parse_args(argv)
    path = args.checkpoint / "train_state.json"
    try:
        print(session_row(json.loads(path.read_text()), args.since))
    except (OSError, ValueError, KeyError) as e:
        print(f"session_row: {path}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
