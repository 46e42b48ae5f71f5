"""Workspace API tokens (SPEC §1 ``api_tokens``, §10, §12 ``tokens create`` / ``tokens revoke``) on the real database:
only a SHA-256 is stored, the token is shown once, revocation is final, scopes are checked; the commands as real
subprocesses (``--json``, exit 2 for bad input)."""

import hashlib
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from appt_pipeline.domain.vocab import TokenScope
from appt_pipeline.store.tokens import (
    TokenError,
    create_token,
    list_tokens,
    parse_scopes,
    revoke_token,
    verify_token,
    well_formed,
)
from appt_pipeline_tests.helpers import rows, seed
from appt_pipeline_tests.helpers.cli import cli_env, one_json, run_cli


def test_a_token_is_returned_once_and_only_its_sha256_is_stored(db: sa.Engine) -> None:
    seed(db, "acme", 0)
    created = create_token(db, "acme", "read,book", name="crm")
    assert well_formed(created.token) and created.token.startswith("appt_")
    assert created.token not in repr(created)
    stored = rows(db, "SELECT row_to_json(t)::text AS j, token_sha256 FROM api_tokens t")
    assert len(stored) == 1
    assert created.token not in stored[0].j  # nowhere in the row, in any column
    assert bytes(stored[0].token_sha256) == hashlib.sha256(created.token.encode()).digest()
    grant = verify_token(db, created.token)
    assert grant is not None and grant.workspace_id == "acme" and grant.token_id == created.id
    assert grant.scopes == {TokenScope.READ, TokenScope.BOOK}
    assert created.as_dict() == {"id": str(created.id), "token": created.token, "workspace_id": "acme",
                                 "scopes": ["read", "book"]}
    other = create_token(db, "acme", ["read"])
    assert other.token != created.token and other.scopes == (TokenScope.READ,)


def test_unknown_malformed_and_revoked_tokens_give_no_grant(db: sa.Engine) -> None:
    seed(db, "acme", 0)
    created = create_token(db, "acme", "read")
    assert verify_token(db, "appt_" + "A" * 43) is None
    assert verify_token(db, created.token + "x") is None
    assert verify_token(db, "") is None and verify_token(db, "Bearer " + created.token) is None
    assert revoke_token(db, "acme", str(created.id)) is True
    first = rows(db, "SELECT revoked_at FROM api_tokens")[0].revoked_at
    assert verify_token(db, created.token) is None
    assert revoke_token(db, "acme", str(created.id)) is False  # idempotent; the first revocation time is kept
    assert rows(db, "SELECT revoked_at FROM api_tokens")[0].revoked_at == first


def test_last_used_at_is_stamped_at_most_once_a_minute(db: sa.Engine) -> None:
    seed(db, "acme", 0)
    created = create_token(db, "acme", "read")
    assert rows(db, "SELECT last_used_at FROM api_tokens")[0].last_used_at is None
    verify_token(db, created.token)
    first = rows(db, "SELECT last_used_at FROM api_tokens")[0].last_used_at
    assert first is not None
    verify_token(db, created.token)
    assert rows(db, "SELECT last_used_at FROM api_tokens")[0].last_used_at == first  # no write per request
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE api_tokens SET last_used_at = last_used_at - :d"), {"d": timedelta(minutes=2)})
    verify_token(db, created.token)
    assert rows(db, "SELECT last_used_at FROM api_tokens")[0].last_used_at > first - timedelta(minutes=1)


def test_bad_input_is_refused_and_writes_nothing(db: sa.Engine) -> None:
    seed(db, "acme", 0)
    seed(db, "other", 0)
    for bad in ("", "write", "read,admin", " , "):
        with pytest.raises(TokenError):
            parse_scopes(bad)
    with pytest.raises(TokenError, match="does not exist"):
        create_token(db, "nope", "read")
    assert parse_scopes(" BOOK , read,read") == (TokenScope.READ, TokenScope.BOOK)
    created = create_token(db, "acme", "read")
    with pytest.raises(TokenError, match="has no token"):
        revoke_token(db, "other", str(created.id))  # a token of another workspace is not revoked through it
    with pytest.raises(TokenError, match="not a UUID"):
        revoke_token(db, "acme", "42")
    with pytest.raises(TokenError, match="has no token"):
        revoke_token(db, "acme", str(uuid.uuid4()))
    assert verify_token(db, created.token) is not None
    assert rows(db, "SELECT count(*) FROM api_tokens")[0][0] == 1


def test_tokens_go_with_their_workspace(db: sa.Engine) -> None:
    seed(db, "acme", 0)
    created = create_token(db, "acme", "read")
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM workspaces WHERE id = 'acme'"))
    assert verify_token(db, created.token) is None
    assert rows(db, "SELECT count(*) FROM api_tokens")[0][0] == 0


def test_tokens_commands(db: sa.Engine, tmp_path: Path, database_url: str) -> None:
    seed(db, "acme", 0)
    env = cli_env(tmp_path / "home", database_url)
    made = run_cli(env, "tokens", "create", "acme", "--scope", "read,book", "--name", "crm", "--json")
    assert made.returncode == 0, made.stderr
    answer = one_json(made)
    assert set(answer) == {"id", "token", "workspace_id", "scopes"}
    assert answer["workspace_id"] == "acme" and answer["scopes"] == ["read", "book"]
    assert answer["token"] not in made.stderr  # printed once, on stdout only
    grant = verify_token(db, answer["token"])
    assert grant is not None and str(grant.token_id) == answer["id"]

    plain = run_cli(env, "tokens", "create", "acme", "--scope", "read")
    assert plain.returncode == 0, plain.stderr
    token = plain.stdout.strip()
    assert well_formed(token) and verify_token(db, token) is not None and "shown only this once" in plain.stderr

    listed = one_json(run_cli(env, "tokens", "list", "acme", "--json"))
    assert [t["id"] for t in listed["tokens"]] == [answer["id"], str(verify_token(db, token).token_id)]  # type: ignore[union-attr]
    assert answer["token"] not in json.dumps(listed) and token not in json.dumps(listed)

    for args, says in ((("tokens", "create", "nope", "--scope", "read"), "does not exist"),
                       (("tokens", "create", "acme", "--scope", "write"), "unknown scope"),
                       (("tokens", "revoke", "acme", str(uuid.uuid4())), "has no token"),
                       (("tokens", "revoke", "acme", "not-an-id"), "not a UUID")):
        bad = run_cli(env, *args)
        assert bad.returncode == 2 and says in bad.stderr, (args, bad.stderr)
    assert [t.id for t in list_tokens(db, "acme")] == [grant.token_id, verify_token(db, token).token_id]  # type: ignore[union-attr]

    revoked = run_cli(env, "tokens", "revoke", "acme", answer["id"])
    assert revoked.returncode == 0 and "revoked" in revoked.stderr
    assert verify_token(db, answer["token"]) is None
    again = run_cli(env, "tokens", "revoke", "acme", answer["id"])
    assert again.returncode == 0 and "already revoked" in again.stderr
