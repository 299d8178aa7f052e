#!/usr/bin/env python3
"""Fails when two files of src/ import each other, directly or through others (issue 19).

An import is a `crate::`/`super::`/`self::` path in code (comments and `#[cfg(test)] mod
tests` left out), resolved to the deepest module file it names, or a parent module's use of
a child declared with `mod child;`. Re-exports count: a `mod.rs` that re-exports from a child
imports it."""
import glob
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else 'src'
files = glob.glob(f'{root}/**/*.rs', recursive=True)


def module_path(path):
    parts = path[len(root) + 1:-3].split('/')
    if parts[-1] in ('mod', 'lib', 'main'):
        parts = parts[:-1]
    return tuple(parts)


modules = {module_path(f): f for f in files}


def code(path):
    text = open(path).read().split('#[cfg(test)]\nmod tests')[0]
    return '\n'.join(l for l in text.split('\n') if not l.strip().startswith('//'))


def resolve(current, segments):
    if segments[0] == 'crate':
        base, rest = [], segments[1:]
    elif segments[0] == 'self':
        base, rest = list(current), segments[1:]
    else:
        base, rest = list(current), segments
        while rest and rest[0] == 'super':
            base, rest = base[:-1], rest[1:]
    best = None
    for i in range(len(rest) + 1):
        candidate = tuple(base + rest[:i])
        if candidate in modules:
            best = candidate
    return best


edges = {}
for module, path in modules.items():
    text = code(path)
    deps = set()
    for m in re.finditer(r'\b(crate|super|self)\b((?:::\w+)*)(?:::\{([^}]*)\})?', text):
        if not m.group(2) and not m.group(3):
            continue
        base = [m.group(1)] + [s for s in m.group(2).split('::') if s]
        items = [i.strip().split('::')[0] for i in m.group(3).split(',')] if m.group(3) else [None]
        for item in items:
            target = resolve(module, base + ([item] if item else []))
            if target is not None and target not in (module, ()):
                deps.add(target)
    for child in re.findall(r'^\s*(?:pub(?:\(crate\))?\s+)?mod (\w+);', text, re.M):
        child_module = module + (child,)
        if child_module in modules and re.search(r'(?<![:\w])' + child + r'::', text):
            deps.add(child_module)
    edges[module] = deps

cycles = set()


def walk(start, node, path):
    for nxt in edges.get(node, ()):
        if nxt == start:
            names = ['/'.join(p) for p in path]
            k = names.index(min(names))
            cycles.add(' -> '.join(names[k:] + names[:k]))
        elif nxt not in path and len(path) < 8:
            walk(start, nxt, path + [nxt])


for module in modules:
    walk(module, module, [module])
for cycle in sorted(cycles):
    print(f'import cycle: {cycle}')
sys.exit(1 if cycles else 0)
