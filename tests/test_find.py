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
    ("/etc/**/ssh*", b"/etc/sshd_config", True),            # **/ is zero or more directories
    ("/etc/**/ssh*", b"/etc/a/b/ssh", True),
    ("[]a]", b"/x/]", True),                                 # a leading ] is a member
    ("x[]]", b"/x]", True),
    ("caf?", "/café".encode(), True),                       # ? is one character, not a byte
    ("caf[é]", "/x/café".encode(), True),
    ("[!a]", b"/", False),                                  # a negated class never matches /
])

def test_patterns(pattern: str, path: bytes, expected: bool) -> None:
    assert compile_pattern(pattern)(path) is expected


def test_an_empty_range_matches_nothing() -> None:
    assert compile_pattern("[z-a]")(b"/x/m") is False  # fnmatch's rule for z-a


def test_patterns_never_backtrack_for_long() -> None:
    import time

    from s3archive.errors import UsageError

    began = time.monotonic()
    long_path = b"/" + b"/".join([b"a" * 50] * 60) + b"/" + b"a" * 250
    assert not compile_pattern("/**/*a*a*a*a*a*b")(long_path)      # fnmatch: no backtracking
    assert not compile_pattern("/**/**/**/**/x")(long_path)        # components: O(parts x names)
    assert compile_pattern("**/a*")(long_path)
    assert time.monotonic() - began < 1.0
    with pytest.raises(UsageError, match="at most two"):           # the rare crossing form
        compile_pattern("/**a**a**a**a**b")
