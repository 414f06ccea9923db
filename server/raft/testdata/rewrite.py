#!/usr/bin/env python3
"""Regenerates the expected outputs of kv-raft's transcript tests (testdata/*.txt).

The tests compile the transcripts in and never touch files; with RAFT_REWRITE set they
print each regenerated transcript between `=== transcript NAME` and `=== end NAME`
lines, and this script writes them back. Review the diff like code afterwards.
Usage: python3 server/raft/testdata/rewrite.py [extra cargo test args]
"""
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    env = dict(os.environ, RAFT_REWRITE="1")
    cmd = ["cargo", "test", "-p", "kv-raft", *sys.argv[1:], "transcripts::",
           "--", "--nocapture", "--test-threads=1"]
    out = subprocess.run(cmd, env=env, cwd=HERE.parent, stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    blocks = re.findall(r"^=== transcript (\w+)\n(.*?)^=== end \1$", out, re.M | re.S)
    if not blocks:
        sys.exit("no transcript printed: did the tests run?")
    for name, text in blocks:
        (HERE / f"{name}.txt").write_text(text)
        print(f"wrote testdata/{name}.txt")


if __name__ == "__main__":
    main()
