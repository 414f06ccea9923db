#!/usr/bin/env python3
"""Regenerates the expected outputs of kv-raft's transcript tests (testdata/*.txt).

The tests compile the transcripts in, and the crate neither reads files nor prints. The
ignored test `rewrite_transcripts` fails on purpose with every regenerated transcript in
its panic message, between `=== transcript NAME` and `=== end NAME` lines; this script
runs it and writes them back. Review the diff like code afterwards.
Usage: python3 server/raft/testdata/rewrite.py [extra cargo test args]
"""
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    cmd = ["cargo", "test", "-p", "kv-raft", *sys.argv[1:], "transcripts::rewrite_transcripts",
           "--", "--ignored", "--exact"]
    # The test fails by design, so the exit status says nothing; the markers do.
    out = subprocess.run(cmd, cwd=HERE.parent, stdout=subprocess.PIPE, text=True).stdout
    blocks = re.findall(r"^=== transcript (\w+)\n(.*?)^=== end \1$", out, re.M | re.S)
    if not blocks:
        sys.exit("no transcript in the test's output: did it build and run?\n" + out[-2000:])
    for name, text in blocks:
        (HERE / f"{name}.txt").write_text(text)
        print(f"wrote testdata/{name}.txt")


if __name__ == "__main__":
    main()
