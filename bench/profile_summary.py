"""Summarise a py-spy profile in collapsed-stack form: the top functions by self and total.

    python bench/profile_summary.py bench/results/<name>.txt [--top 20]

Input is what ``py-spy record --format raw`` writes: one line per distinct
stack, frames separated by ``;`` from the root, then a space and the sample
count. Functions are aggregated over line numbers. "self" counts samples
where the function is the innermost frame; "total" counts samples where it
is anywhere on the stack below the event loop's dispatch (once per sample,
however deep it recurses): the trunk above it, from interpreter start-up to
the loop, is on nearly every stack and says nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)$")
# Frames that dispatch event loop callbacks; everything above them is trunk.
DISPATCH_FRAMES = (
    "Handle._run (asyncio/events.py)",
    "BaseEventLoop._run_once (asyncio/base_events.py)",
    "Runner.run (asyncio/runners.py)",
)


@dataclass(frozen=True)
class Summary:
    """Sample counts by function, and the samples in all."""

    samples: int
    self_counts: Counter[str]
    total_counts: Counter[str]
    thread_counts: Counter[str]
    package_counts: Counter[str]


def function_name(frame: str) -> str:
    """A frame without its line number: ``name (path/file.py)``."""
    return _LINE_NUMBER.sub(")", frame.strip())


def summarise(text: str) -> Summary:
    """Count self and total samples per function."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    thread_counts: Counter[str] = Counter()
    package_counts: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, frames = _split_thread(stack)
        if not frames:
            continue
        samples += count
        thread_counts[thread] += count
        self_counts[frames[-1]] += count
        package_counts[package_of(_below_dispatch(frames) or frames[-1:])] += count
        for name in set(_below_dispatch(frames)):
            total_counts[name] += count
    return Summary(samples, self_counts, total_counts, thread_counts, package_counts)


def _split_thread(stack: str) -> tuple[str, list[str]]:
    """The thread label (py-spy --threads), if any, and the function frames."""
    frames = [function_name(f) for f in stack.split(";")]
    if frames and frames[0].startswith(("thread ", "process ")):
        return frames[0], [f for f in frames[1:] if not f.startswith("thread ")]
    return "", frames


def package_of(frames: list[str]) -> str:
    """The innermost non-standard-library package on the stack, else the stdlib module."""
    for frame in reversed(frames):
        top = _top_module(frame)
        if top and top not in sys.stdlib_module_names and not top.startswith("<"):
            return top
    top = _top_module(frames[-1])
    return f"stdlib {top}" if top else "native"


def _top_module(frame: str) -> str:
    """``sqlalchemy`` for ``f (sqlalchemy/sql/base.py)``; empty for native frames."""
    path = frame.rpartition(" (")[2].rstrip(")")
    if not path.endswith(".py") and not path.startswith("<"):
        return ""
    return path.split("/")[0].removesuffix(".py")


def _below_dispatch(frames: list[str]) -> list[str]:
    for depth in range(len(frames) - 1, -1, -1):
        if frames[depth] in DISPATCH_FRAMES:
            return frames[depth + 1 :]
    return frames


def report(summary: Summary, top: int = 20) -> str:
    """Two ranked tables, shares in percent of all samples."""
    if summary.samples == 0:
        return "no samples in the profile"
    lines = [f"{summary.samples} samples"]
    for title, counts in (
        ("self", summary.self_counts),
        ("total", summary.total_counts),
    ):
        lines.append(f"\ntop {top} by {title} time")
        for name, count in counts.most_common(top):
            lines.append(f"  {100 * count / summary.samples:5.1f}%  {name}")
    lines.append("\nsamples by package (innermost non-stdlib frame below the loop)")
    for name, count in summary.package_counts.most_common(top):
        lines.append(f"  {100 * count / summary.samples:5.1f}%  {name}")
    if len(summary.thread_counts) > 1:
        lines.append("\nsamples by thread")
        for name, count in summary.thread_counts.most_common():
            lines.append(f"  {100 * count / summary.samples:5.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    """Print the summary of one collapsed-stack file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(report(summarise(args.profile.read_text()), args.top))


if __name__ == "__main__":
    main()
