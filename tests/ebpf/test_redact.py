"""Command-line redaction (pure)."""

from __future__ import annotations

import pytest

from otelguard.ebpf.redact import MASK, command_line, redact_args, redact_env

CASES = [
    # long flags, both spellings
    (["app", "--password", "hunter2", "--user", "bob"], ["app", "--password", MASK, "--user", "bob"]),
    (["app", "--password=hunter2"], ["app", f"--password={MASK}"]),
    (["app", "--db-password", "x"], ["app", "--db-password", MASK]),
    (["app", "--token=abc", "--api-key", "k", "--apikey=k2"],
     ["app", f"--token={MASK}", "--api-key", MASK, f"--apikey={MASK}"]),
    (["app", "--client-secret", "s", "--secret_key=s2"],
     ["app", "--client-secret", MASK, f"--secret_key={MASK}"]),
    (["app", "--access-key", "AKIA", "--private-key=pk"],
     ["app", "--access-key", MASK, f"--private-key={MASK}"]),
    (["app", "--passphrase", "p"], ["app", "--passphrase", MASK]),
    (["app", "--credentials=c"], ["app", f"--credentials={MASK}"]),
    # Go-style single dash long flags
    (["app", "-password", "x", "-token=y"], ["app", "-password", MASK, f"-token={MASK}"]),
    # file/path flags point at secrets; a path is evidence, not a secret
    (["app", "--token-file", "/var/run/t", "--password-file=/p"],
     ["app", "--token-file", "/var/run/t", "--password-file=/p"]),
    # harmless flags untouched
    (["ls", "-la", "--color=auto", "/tmp"], ["ls", "-la", "--color=auto", "/tmp"]),
    (["app", "--port", "8080", "--user=bob"], ["app", "--port", "8080", "--user=bob"]),
    # short flags are program specific
    (["mysql", "-uroot", "-phunter2", "db"], ["mysql", "-uroot", f"-p{MASK}", "db"]),
    (["/usr/bin/mysql", "-p", "db"], ["/usr/bin/mysql", "-p", "db"]),
    (["mysqldump", "-psecret"], ["mysqldump", f"-p{MASK}"]),
    (["ssh", "-p", "22", "host"], ["ssh", "-p", "22", "host"]),
    (["sshpass", "-p", "pw", "ssh", "h"], ["sshpass", "-p", MASK, "ssh", "h"]),
    (["sshpass", "-ppw", "ssh"], ["sshpass", f"-p{MASK}", "ssh"]),
    (["redis-cli", "-a", "pw", "ping"], ["redis-cli", "-a", MASK, "ping"]),
    # KEY=VALUE
    (["env", "AWS_SECRET_ACCESS_KEY=abc", "FOO=bar", "python"],
     ["env", f"AWS_SECRET_ACCESS_KEY={MASK}", "FOO=bar", "python"]),
    (["docker", "run", "-e", "DB_PASSWORD=x", "-e", "MODE=prod"],
     ["docker", "run", "-e", f"DB_PASSWORD={MASK}", "-e", "MODE=prod"]),
    (["app", "GITHUB_TOKEN=ghp_x"], ["app", f"GITHUB_TOKEN={MASK}"]),
    (["app", "password=x"], ["app", f"password={MASK}"]),
    (["app", "PATH=/bin"], ["app", "PATH=/bin"]),
    # URL userinfo
    (["git", "clone", "https://user:pw@github.com/x.git"],
     ["git", "clone", f"https://user:{MASK}@github.com/x.git"]),
    (["psql", "postgres://app:s3cr%40t@db:5432/x"], ["psql", f"postgres://app:{MASK}@db:5432/x"]),
    (["curl", "https://example.com/a:b@c"], ["curl", "https://example.com/a:b@c"]),
    (["curl", "https://user@example.com/"], ["curl", "https://user@example.com/"]),
    (["app", "--url=redis://:pw@h:6379"], ["app", f"--url=redis://:{MASK}@h:6379"]),
    # bearer / basic tokens
    (["curl", "-H", "Authorization: Bearer abc.def", "https://x"],
     ["curl", "-H", f"Authorization: Bearer {MASK}", "https://x"]),
    (["curl", "-H", "Authorization: Basic dXNlcjpwdw==", "u"],
     ["curl", "-H", f"Authorization: Basic {MASK}", "u"]),
    (["curl", "-H", "Authorization:", "Bearer", "abc"],
     ["curl", "-H", "Authorization:", "Bearer", MASK]),
    # edge cases
    ([], []),
    (["app", "--password"], ["app", "--password"]),
    (["app", ""], ["app", ""]),
]


@pytest.mark.parametrize("argv,want", CASES)
def test_redact_args(argv: list[str], want: list[str]) -> None:
    assert redact_args(argv) == want
    assert len(redact_args(argv)) == len(argv)


def test_command_line_joins_redacted_args() -> None:
    assert command_line(["app", "--token", "t", "x"]) == f"app --token {MASK} x"


def test_secret_value_never_survives() -> None:
    secret = "Zq9-very-secret"
    argvs = [
        ["app", "--password", secret], ["app", f"--api-key={secret}"], ["mysql", f"-p{secret}"],
        ["env", f"MY_SECRET={secret}"], ["git", f"https://u:{secret}@h/r"],
        ["curl", "-H", f"Authorization: Bearer {secret}"],
    ]
    for argv in argvs:
        assert secret not in command_line(argv), argv


def test_redact_env() -> None:
    assert redact_env(["HTTPS_PROXY=http://bob:hunter2@proxy:3128", "LD_PRELOAD=/tmp/x.so",
                       "DB_PASSWORD=hunter2", "NO_EQUALS", "API_KEY_FILE=/run/key"]) == [
        f"HTTPS_PROXY=http://bob:{MASK}@proxy:3128", "LD_PRELOAD=/tmp/x.so",
        f"DB_PASSWORD={MASK}", "NO_EQUALS", "API_KEY_FILE=/run/key"]
