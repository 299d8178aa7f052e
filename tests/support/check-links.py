#!/usr/bin/env python3
"""Checks the links between the project's Markdown pages (`make check`): every relative link
and image must name a file that exists, and every `#anchor` a heading of its page (GitHub's
slugs). External links (http, https, mailto) are not fetched. Exits 1 listing what is broken."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')


def pages():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    return [ROOT / p for p in listed if "node_modules" not in p]


def prose(text):
    """The page without fenced code blocks and inline code (links there are not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return out


def slugs(path):
    seen, found = {}, set()
    for line in prose(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def main():
    broken = []
    checked = 0
    for page in pages():
        for number, line in enumerate(prose(page.read_text(encoding="utf-8")), 1):
            for target in LINK.findall(line):
                if re.match(r"^(https?|mailto):", target):
                    continue
                checked += 1
                path, _, anchor = target.partition("#")
                resolved = (page.parent / path).resolve() if path else page
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                if not resolved.exists():
                    broken.append(f"{where}: no such file")
                elif anchor and resolved.suffix == ".md" and anchor not in slugs(resolved):
                    broken.append(f"{where}: no heading #{anchor}")
    if broken:
        print("broken links:\n  " + "\n  ".join(broken))
        sys.exit(1)
    print(f"links: {checked} relative links in {len(pages())} Markdown pages resolve")


main()
