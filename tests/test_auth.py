"""Logins for `qa serve --auth` (qa/auth.py): a users file with salted hashes and roles, checked
over HTTP and in Chromium. An anonymous or reader upload is refused and nothing changes; a server
reachable beyond this machine without --auth is read-only."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qa.auth import AuthError, Users, add_user
from tests.conftest import SEEDS, free_port

EDITOR, READER, PASSWORD = "编辑甲", "reader1", "correct horse"


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "users.tsv"
    add_user(path, EDITOR, PASSWORD, "editor")
    add_user(path, READER, PASSWORD, "reader")
    return path


def test_users_file_holds_salted_hashes_readable_by_its_owner_only(users_file: Path):
    text = users_file.read_text(encoding="utf-8")
    assert PASSWORD not in text and text.count("pbkdf2_sha256$") == 2
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    users = Users.load(users_file)
    assert users.check(EDITOR, PASSWORD) and users.check(READER, PASSWORD)
    assert not users.check(EDITOR, "wrong password") and not users.check("nobody", PASSWORD)
    assert (users.role(EDITOR), users.role(READER), users.role("nobody"), users.role(None)) == (
        "editor",
        "reader",
        None,
        None,
    )
    salts = {line.split("$")[2] for line in text.splitlines() if "$" in line}
    assert len(salts) == 2  # a salt each: the same password hashes differently


def test_bad_users_and_files_say_what_to_do(tmp_path: Path):
    with pytest.raises(AuthError, match="at least 8"):
        add_user(tmp_path / "u.tsv", "甲", "short")
    with pytest.raises(AuthError, match="without spaces"):
        add_user(tmp_path / "u.tsv", "a b", PASSWORD)
    with pytest.raises(AuthError, match="reader or editor"):
        add_user(tmp_path / "u.tsv", "甲", PASSWORD, "admin")  # type: ignore[arg-type]
    with pytest.raises(AuthError, match="cannot be read.*qa users add"):
        Users.load(tmp_path / "missing.tsv")
    (tmp_path / "bad.tsv").write_text("甲 editor plain-password\n", encoding="utf-8")
    with pytest.raises(AuthError, match="line 1: expected NAME<TAB>"):
        Users.load(tmp_path / "bad.tsv")
    add_user(tmp_path / "u.tsv", "甲", PASSWORD, "reader")
    add_user(tmp_path / "u.tsv", "甲", "another password", "editor")  # a new password and role
    users = Users.load(tmp_path / "u.tsv")
    assert len(users) == 1 and users.role("甲") == "editor" and users.check("甲", "another password")


def test_qa_users_add_writes_the_file(tmp_path: Path, monkeypatch, capsys):
    from qa.cli import main

    monkeypatch.setenv("NEW_PW", PASSWORD)
    assert (
        main(["users", "add", "乙", "--role", "editor", "--auth", str(tmp_path / "u.tsv"), "--password-env", "NEW_PW"])
        == 0
    )
    assert Users.load(tmp_path / "u.tsv").role("乙") == "editor"
    assert "qa serve --auth" in capsys.readouterr().err


@dataclass
class Served:
    url: str
    docs: Path


def _serve(root: Path, **options) -> Iterator[Served]:
    """The chat over two seed documents (keywords only: no model needed), on a free port."""
    from qa.index import build_index
    from qa.search import Retriever
    from ui.app import create_app, launch_app

    docs = root / "docs"
    docs.mkdir()
    for name in sorted(p.name for p in SEEDS.iterdir())[:2]:
        shutil.copy(SEEDS / name, docs / name)
    build_index(docs, root / "index", dense=False)
    app = create_app(Retriever.load(root / "index"), docs, **options)
    url = launch_app(app, host="127.0.0.1", port=free_port())
    try:
        yield Served(url, docs)
    finally:
        app.close(verbose=False)


@pytest.fixture(scope="module")
def with_auth(tmp_path_factory, users_file: Path) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("with-auth"), users=Users.load(users_file))


@pytest.fixture(scope="module")
def read_only(tmp_path_factory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("read-only"), editable=False)


def _upload(url: str, path: Path, auth: tuple[str, str] | None = None) -> str:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False, auth=auth)
    status, *_ = client.predict([handle_file(str(path))], api_name="/upload")
    return str(status)


def test_over_http_only_an_editor_changes_the_documents(with_auth: Served, tmp_path: Path):
    import httpx

    new = tmp_path / "新文件.txt"
    new.write_text("编辑者上传的文件：蓝色鲸鱼在深海唱歌。\n", encoding="utf-8")
    before = sorted(p.name for p in with_auth.docs.iterdir())
    anonymous = httpx.post(f"{with_auth.url.rstrip('/')}/gradio_api/call/upload", json={"data": [[]]}, timeout=30)
    assert anonymous.status_code in (401, 403), anonymous.text  # no login: the API refuses
    with pytest.raises(Exception):  # noqa: B017 - the client cannot even read the API without a login
        _upload(with_auth.url, new)
    with pytest.raises(Exception):  # noqa: B017 - a wrong password is no login
        _upload(with_auth.url, new, (EDITOR, "wrong password"))
    assert "只有编辑者" in _upload(with_auth.url, new, (READER, PASSWORD))
    assert sorted(p.name for p in with_auth.docs.iterdir()) == before  # nothing changed
    assert "已加入：新文件.txt" in _upload(with_auth.url, new, (EDITOR, PASSWORD))
    assert (with_auth.docs / "新文件.txt").exists()


def test_a_server_without_auth_beyond_this_machine_is_read_only(read_only: Served, tmp_path: Path):
    new = tmp_path / "新文件.txt"
    new.write_text("不该加入的文件：红色蜗牛在屋顶散步。\n", encoding="utf-8")
    before = sorted(p.name for p in read_only.docs.iterdir())
    assert "只读" in _upload(read_only.url, new)
    assert sorted(p.name for p in read_only.docs.iterdir()) == before


def test_serve_beyond_loopback_without_auth_warns_and_makes_documents_read_only(monkeypatch, capsys, tmp_path):
    import ui.serve as app_module

    seen: dict[str, object] = {}

    def fake_create_app(retriever, docs_dir, **options):
        seen.update(options)
        raise KeyboardInterrupt  # stop before launching

    monkeypatch.setattr(app_module, "prepare_retriever", lambda *a, **k: None)
    monkeypatch.setattr(app_module, "create_app", fake_create_app)
    with pytest.raises(KeyboardInterrupt):
        app_module.serve(tmp_path, tmp_path, host="0.0.0.0")
    assert seen["editable"] is False and seen["users"] is None
    err = capsys.readouterr().err
    assert "read-only" in err and "qa users add" in err


@pytest.mark.browser
def test_in_chromium_everyone_logs_in_and_only_an_editor_sees_upload(with_auth: Served):
    from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _require_chromium

    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for user, may_edit in ((READER, False), (EDITOR, True)):
                page = browser.new_context(locale="zh-CN").new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(with_auth.url)
                page.locator("input[type=password]").wait_for()  # the login page, not the chat
                assert page.locator("#qa-chat").count() == 0
                page.locator("input[type=text]").first.fill(user)
                page.locator("input[type=password]").first.fill(PASSWORD)
                page.locator("button:has-text('Login'), button:has-text('登录')").first.click()
                page.locator("#qa-chat").wait_for()
                page.get_by_role("tab", name="文档").click()
                upload = page.get_by_role("button", name="上传并更新索引")
                if may_edit:
                    upload.wait_for()
                    assert page.locator("#qa-read-only").is_hidden()
                else:
                    page.locator("#qa-read-only").wait_for()
                    assert "只有编辑者" in page.locator("#qa-read-only").inner_text()
                    assert upload.count() == 0
                page.context.close()
        finally:
            browser.close()
