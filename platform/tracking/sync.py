"""``python -m platform.tracking sync DIR``: upload what tracking buffers left by finished or crashed
processes still hold, without training."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from platform.tracking.buffer import RECORDS_FILE, STATE_FILE, BufferInUseError, TrackingBufferError
from platform.tracking.tracker import BUFFER_ROOT, RunTracker, default_tracking_uri


def find_buffers(root: Path) -> list[Path]:
    """``root`` if it is a tracking buffer, else every buffer below it (not those inside another buffer's
    staged artifacts), sorted."""
    root = Path(root)
    if (root / STATE_FILE).is_file():
        return [root]
    found: list[Path] = []
    for state in sorted(root.rglob(STATE_FILE)):
        buffer = state.parent
        if not any(buffer.is_relative_to(b) for b in found):
            found.append(buffer)
    return found


def buffer_backlog(root: Path, tracking_uri: str) -> dict[Path, int]:
    """Records not yet acknowledged by ``tracking_uri``, per buffer under ``root`` (only buffers with some).

    Reads the files without taking the buffers' locks: a snapshot, for the end-of-run hint."""
    backlog: dict[Path, int] = {}
    for buffer in find_buffers(root):
        try:
            state = json.loads((buffer / STATE_FILE).read_text(encoding="utf-8"))
            acked = int(state.get("targets", {}).get(tracking_uri, {}).get("acked_seq", 0))
            lines = (
                (buffer / RECORDS_FILE).read_bytes().splitlines() if (buffer / RECORDS_FILE).exists() else []
            )
            last = max((json.loads(line)["seq"] for line in lines[-1:] if line.strip()), default=0)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: sync reports it
        if last > acked:
            backlog[buffer] = last - acked
    return backlog


def sync_buffer(buffer_dir: Path, tracking_uri: str | None = None, timeout_s: float = 120.0) -> bool:
    """Upload a buffer left by a finished or crashed process (statuses included). True when complete.

    Raises ``BufferInUseError`` when a live tracker holds the buffer (it uploads it itself)."""
    state = json.loads((Path(buffer_dir) / STATE_FILE).read_text(encoding="utf-8"))
    targets = list(state.get("targets", {}))
    uri = tracking_uri or (targets[0] if len(targets) == 1 else default_tracking_uri(Path.cwd()))
    tracker = RunTracker._build(uri, state["experiment"], state["run_name"], Path(buffer_dir), {}, None, 0.0,
                                replay=True, sibling_if_busy=False)  # fmt: skip
    tracker._thread.start()
    ok = tracker.flush(timeout_s)
    with tracker._cv:
        tracker._stopping = True
        tracker._cv.notify_all()
    tracker._buffer.close()
    return ok


def sync_all(root: Path, tracking_uri: str | None = None, timeout_s: float = 300.0) -> int:
    """``python -m platform.tracking sync ROOT``: every buffer of ``root`` (see ``find_buffers``), one line
    each. Exit status 0 when all were uploaded, 1 when records remain, 2 when ``root`` holds no buffer."""
    buffers = find_buffers(root)
    if not buffers:
        print(
            f"error: {root} is not a tracking buffer and holds none (no {STATE_FILE} in it or below it); pass "
            f"a run's buffer folder, e.g. runs/<name>/{BUFFER_ROOT}",
            file=sys.stderr,
        )
        return 2
    complete = True
    for buffer in buffers:
        try:
            ok = sync_buffer(buffer, tracking_uri, timeout_s)
        except BufferInUseError as e:
            print(f"{buffer}: skipped, {e} (a live tracker uploads its own buffer)")
            complete = False
            continue
        except (OSError, ValueError, TrackingBufferError) as e:
            print(f"{buffer}: cannot be read: {e}")
            complete = False
            continue
        print(f"{buffer}: {'uploaded everything' if ok else 'incomplete: records remain'}")
        complete = complete and ok
    return 0 if complete else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m platform.tracking", description="upload left-over MLflow tracking buffers"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sync = sub.add_parser(
        "sync",
        help="upload what tracking buffers still hold: one buffer, or every buffer "
        f"under a folder (e.g. runs/<name>/{BUFFER_ROOT})",
    )
    sync.add_argument(
        "buffer_dir",
        type=Path,
        metavar="DIR",
        help=f"a buffer, or a folder of buffers such as runs/<name>/{BUFFER_ROOT}",
    )
    sync.add_argument(
        "--tracking-uri",
        default=None,
        help="default: each buffer's only target URI, else $MLFLOW_TRACKING_URI or ./mlflow.db",
    )
    sync.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return sync_all(args.buffer_dir, args.tracking_uri, args.timeout_s)
