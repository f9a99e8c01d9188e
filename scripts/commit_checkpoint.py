"""Replace an in-progress run's committed checkpoint with a newer one of the same run, and move
the step everywhere the docs name it.

    python scripts/commit_checkpoint.py runs/pytorch-vdsr/checkpoints/step-0015000
        [--recipe pytorch-vdsr] [--repo .]

A run that spans working sessions on the CPU keeps its newest whole checkpoint in
``checkpoints/RECIPE-step-NNNNNNN`` (``checkpoints/README.md``), and five places name that step:
the checkpoint path in ``benchmarks/README.md`` (the loan plan), ``checkpoints/README.md`` and the
recipe's YAML, and README's "begun / started on the CPU ..., at step N" (twice).
The run in progress has ``tests/test_committed_checkpoint.py``, which fails when one is missed
(``tests/test_commit_checkpoint.py`` tests this script); this script does them all, so a session
can commit its progress in one step, mid-run as well as at its end.

It refuses (exit status 2, one line naming the folder and the problem, nothing changed) a
checkpoint that is not whole, not of the same run (another ``init_sha256`` or optimizer), not
newer than the committed one, or written by another recipe: where the run folder (two levels
above the checkpoint) has train.py's ``config.json``, its schedule and step (the keys of
``RECIPE_KEYS``) must be the recipe's YAML's. A run resumed from another's checkpoint under a
changed schedule (``pytorch-vdsr-cut`` from ``pytorch-vdsr``'s) shares its ``init_sha256`` and
optimizer, and would otherwise replace that run's checkpoint.

README's two progress phrases give the step of one run, ``pytorch-vdsr`` (``README_RUN``); a side
run committed beside it (``--recipe pytorch-vdsr-cut``) moves only its three paths.
Only the committed checkpoint's own path moves: a doc line that names an earlier checkpoint of the
run (where a side run began) is left as written, not silently moved to the new step; for the run
in progress, tests/test_committed_checkpoint.py then fails on it, since its three docs may name
only the newest (so such a record names the step in words, as benchmarks/README.md's does).

The copy is written beside its final name and renamed into place; the old folder is removed only
after that. It does not run git: commit with
``git add -A checkpoints README.md benchmarks/README.md launch/configs/RECIPE.yaml``. The
measured part of the session's row in ``checkpoints/README.md``'s table (its steps, rate, loss
and validations) is printed by ``scripts/session_row.py CHECKPOINT --since STEP``.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vdsr.cliargs import ArgParser  # noqa: E402

NEEDED = ("model.safetensors", "ema.safetensors", "optimizer.bin", "train_state.json")


def resume_docs(recipe: str) -> tuple[str, ...]:
    """The files (relative to the repository) that name the committed checkpoint's path."""
    return ("benchmarks/README.md", "checkpoints/README.md", f"launch/configs/{recipe}.yaml")


# README's progress phrases: the recipes table's row and the narrative, of this run only
PROGRESS = re.compile(r"((?:begun|started) on the CPU[^|.]*?, at step )([\d,]+)")
README_RUN = "pytorch-vdsr"
# what makes a recipe's run that one: a checkpoint's config.json must agree with the YAML on these
RECIPE_KEYS = ("lr", "lr_step_epochs", "lr_gamma", "epochs", "patches_per_epoch", "batch_size", "loss",
               "clip", "clip_theta", "momentum", "weight_decay", "seed")


class Refused(Exception):
    """The checkpoint cannot replace the committed one; the message names it and why."""


def read_state(folder: Path) -> dict:
    """train_state.json of a whole checkpoint folder (Refused if a file is missing or unreadable)."""
    missing = [n for n in NEEDED if not (folder / n).is_file()]
    if missing:
        raise Refused(f"{folder}: not a whole checkpoint (missing {', '.join(missing)})")
    try:
        state = json.loads((folder / "train_state.json").read_text())
        int(state["step"])
    except (ValueError, KeyError, TypeError) as e:
        raise Refused(f"{folder}/train_state.json: unreadable ({e})") from None
    from safetensors import safe_open

    for name in ("model.safetensors", "ema.safetensors"):
        try:
            with safe_open(str(folder / name), "pt") as f:
                if not list(f.keys()):
                    raise Refused(f"{folder / name}: holds no tensors")
        except Refused:
            raise
        except Exception as e:  # a truncated or foreign file
            raise Refused(f"{folder / name}: not a readable safetensors file ({e})") from None
    return state


def check_recipe(src: Path, repo: Path, recipe: str) -> None:
    """Refused if the run that wrote src (its config.json, two levels up) trained another recipe."""
    run_config = src.parent.parent / "config.json"
    if not run_config.is_file():  # a folder copied out of its run: nothing to compare
        return
    import yaml

    try:
        ran = json.loads(run_config.read_text())
        want = yaml.safe_load((repo / "launch" / "configs" / f"{recipe}.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise Refused(f"{run_config}: unreadable ({e})") from None
    differ = [f"{k} {ran.get(k)!r} (the recipe: {want[k]!r})" for k in RECIPE_KEYS if k in want and ran.get(k) != want[k]]
    if differ:
        raise Refused(f"{src}: another recipe's run, not {recipe} ({run_config}: {', '.join(differ)})")


def committed(repo: Path, recipe: str) -> Path:
    folders = sorted((repo / "checkpoints").glob(f"{recipe}-step-*"))
    if len(folders) != 1:
        raise Refused(f"{repo / 'checkpoints'}: one committed {recipe} checkpoint expected, found "
                      f"{[f.name for f in folders]}")
    return folders[0]


def replace(src: Path, repo: Path, recipe: str) -> tuple[Path, Path, list[str]]:
    """Copy src in as checkpoints/RECIPE-step-N, remove the old folder, rewrite the docs.
    Returns (old folder, new folder, the docs changed)."""
    old = committed(repo, recipe)
    old_state, new_state = read_state(old), read_state(src)
    for key in ("init_sha256", "optimizer"):
        if new_state.get(key) != old_state.get(key):
            raise Refused(f"{src}: another run ({key} {new_state.get(key)!r}, the committed "
                          f"{old.name} has {old_state.get(key)!r})")
    check_recipe(src, repo, recipe)
    step, old_step = int(new_state["step"]), int(old_state["step"])
    if step <= old_step:
        raise Refused(f"{src}: step {step} is not newer than the committed {old.name}")
    new = repo / "checkpoints" / f"{recipe}-step-{step:07d}"
    # check every doc before changing anything
    texts = {}
    readme = ("README.md",) if recipe == README_RUN else ()
    for doc in (*resume_docs(recipe), *readme):
        path = repo / doc
        if not path.is_file():
            raise Refused(f"{path}: missing")
        texts[doc] = path.read_text()
    for doc in resume_docs(recipe):
        if f"checkpoints/{old.name}" not in texts[doc]:
            raise Refused(f"{repo / doc}: does not name checkpoints/{old.name}")
    found = [n for _, n in PROGRESS.findall(texts["README.md"])] if readme else []
    if readme and (len(found) != 2 or set(found) != {f"{old_step:,}"}):
        raise Refused(f"{repo / 'README.md'}: expected two 'on the CPU ..., at step {old_step:,}' phrases, "
                      f"found {found}")

    tmp = new.with_name(new.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    tmp.rename(new)
    shutil.rmtree(old)
    changed = []
    for doc, text in texts.items():
        if doc == "README.md":
            out = PROGRESS.sub(lambda m: m.group(1) + f"{step:,}", text)
        else:
            # the committed path only: a record of an earlier step (where a side run began) stays
            out = re.sub(rf"checkpoints/{re.escape(old.name)}(?!\d)", f"checkpoints/{new.name}", text)
        if out != text:
            part = repo / (doc + ".tmp")
            part.write_text(out)
            part.replace(repo / doc)
            changed.append(doc)
    return old, new, changed


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="the run's newer checkpoint folder (Accelerate save_state)")
    ap.add_argument("--recipe", default="pytorch-vdsr", help="the run's recipe (default: %(default)s, the run in progress)")
    ap.add_argument("--repo", type=Path, default=ROOT, help="the repository (default: this one)")
    args = ap.parse_args(argv)
    try:
        old, new, changed = replace(args.checkpoint, args.repo, args.recipe)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{old.name} -> {new.name}; updated {', '.join(changed)}")
    print(f"commit: git add -A checkpoints {' '.join(changed)}; add this session's row to checkpoints/README.md's "
          f"table (python scripts/session_row.py checkpoints/{new.name} --since STEP_RESUMED_FROM)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
