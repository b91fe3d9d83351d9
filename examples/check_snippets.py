#!/usr/bin/env python3
"""Checks that the README's code snippets are the examples' code, verbatim.

A snippet in a Markdown file is a fenced block preceded by a marker line:

    <!-- snippet: examples/quickstart.cpp#quickstart -->
    ```cpp
    ...
    ```

and must equal the lines between the two `// [quickstart]` lines of
examples/quickstart.cpp, less their common indentation. Run as a test (suite
examples'): check_snippets.py <source-root> <markdown file>... ; every file
must exist, and together they must hold at least one snippet.
"""
import pathlib
import re
import sys
import textwrap

MARKER = re.compile(r"^<!--\s*snippet:\s*(\S+?)#(\S+)\s*-->\s*$")


def region(path: pathlib.Path, tag: str) -> str:
    lines = path.read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip() == f"// [{tag}]"]
    if len(marks) != 2:
        raise ValueError(f"{path}: expected two '// [{tag}]' lines, found {len(marks)}")
    return textwrap.dedent("\n".join(lines[marks[0] + 1 : marks[1]])).strip("\n")


def snippets(md: pathlib.Path):
    lines = md.read_text().splitlines()
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if not m:
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
            yield i + 1, m.group(1), m.group(2), None
            continue
        end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith("```")), None)
        body = None if end is None else "\n".join(lines[i + 2 : end]).strip("\n")
        yield i + 1, m.group(1), m.group(2), body


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    failures = checked = 0
    for name in sys.argv[2:]:
        md = root / name
        if not md.exists():
            print(f"FAIL {name}: no such file")
            failures += 1
            continue
        for lineno, src, tag, body in snippets(md):
            where = f"{name}:{lineno} ({src}#{tag})"
            try:
                want = region(root / src, tag)
            except (OSError, ValueError) as e:
                print(f"FAIL {where}: {e}")
                failures += 1
                continue
            checked += 1
            if body is None:
                print(f"FAIL {where}: no fenced code block after the marker")
                failures += 1
            elif body != want:
                print(f"FAIL {where}: differs from the example; paste this:\n{want}")
                failures += 1
            else:
                print(f"ok   {where}")
    print(f"{checked} snippets checked, {failures} failed")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
