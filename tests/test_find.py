"""Pattern matching of ``find``: names vs whole paths, ``*`` vs ``**``, bytes."""

from __future__ import annotations

import pytest

from s3archive.find import compile_pattern


@pytest.mark.parametrize("pattern, path, expected", [
    ("*.conf", b"/etc/nginx/nginx.conf", True),            # a name pattern, any depth
    ("*.conf", b"/etc/nginx/nginx.conf.bak", False),
    ("nginx.conf", b"/etc/nginx/nginx.conf", True),
    ("nginx", b"/etc/nginx/nginx.conf", False),             # names match whole names
    ("/etc/*.conf", b"/etc/a.conf", True),                  # a path pattern is anchored
    ("/etc/*.conf", b"/etc/nginx/a.conf", False),           # * stays in one component
    ("/etc/**.conf", b"/etc/nginx/a.conf", True),           # ** crosses components
    ("/etc/**/a.conf", b"/etc/x/y/a.conf", True),
    ("nginx/*.conf", b"/srv/etc/nginx/a.conf", True),       # relative: at any depth
    ("nginx/*.conf", b"/srv/etc/xnginx/a.conf", False),
    ("/etc/ssh/", b"/etc/ssh", True),                       # a trailing slash is ignored
    ("?.txt", b"/a.txt", True),
    ("?.txt", b"/ab.txt", False),
    ("[ab].txt", b"/b.txt", True),
    ("[!ab].txt", b"/c.txt", True),
    ("[!ab].txt", b"/a.txt", False),
    ("caf\udce9*", b"/names/caf\xe9-latin1", True),         # non-UTF-8 bytes (surrogateescape)
    ("new*", b"/names/new\nline", True),                    # newlines in names match *
    ("a+b(c)", b"/x/a+b(c)", True),                         # regex characters are literal
    ("[unclosed", b"/x/[unclosed", True),
])
def test_patterns(pattern: str, path: bytes, expected: bool) -> None:
    assert compile_pattern(pattern)(path) is expected
