#!/usr/bin/env python3
"""Prints a nextest JUnit report's slowest tests and its total test time.

Usage: slowest.py JUNIT_XML [N]. test.sh runs it after each pass so that CI's log says where the
minutes went; a missing report prints a line and exits 0 (the pass's own result decides).
"""
import sys
import xml.etree.ElementTree as ET


def main() -> int:
    path = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"no test times: {path}: {e}")
        return 0
    cases = [
        (float(case.get("time") or 0), f"{case.get('classname')} {case.get('name')}")
        for case in root.iter("testcase")
    ]
    cases.sort(reverse=True)
    total = sum(t for t, _ in cases)
    print(f"{len(cases)} tests, {total:.0f} s of test time; the slowest:")
    for secs, name in cases[:count]:
        print(f"{secs:8.1f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
