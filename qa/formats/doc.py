"""Legacy Word .doc (Word 97–2003): the text, read with Debian's catdoc (or antiword).

The file is handed to the tool in a private temporary folder; its output is UTF-8 text, one
paragraph per line (catdoc -w: no wrapping), read like a .txt file would be. The tools are
Debian packages that `make browser` installs; where neither is there, the file is skipped with
the message it got before .doc was read: save it as .docx. A tool that fails or runs past
TOOL_TIMEOUT_S seconds means a damaged file, never a stopped build.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from qa.formats.base import Document, UnreadableFile, file_title, heading_title, short_title

TOOL_TIMEOUT_S = 60
# The commands tried in turn, the file's path appended: catdoc reads Chinese Word 97 files
# (and more of the odd ones, measured on generated files); antiword is the second choice.
TOOLS = (("catdoc", "-d", "utf-8", "-w"), ("antiword", "-m", "UTF-8.txt", "-w", "0"))


def read_doc(raw: bytes, path: str) -> Document:
    """The text of a Word 97–2003 .doc as a `Document` (raises UnreadableFile)."""
    if raw[:1024].lstrip().startswith(b"{\\rtf"):
        raise UnreadableFile(
            "it is an RTF file saved as .doc; open it in Word or WPS, save it as .docx and add that file", "legacy_doc"
        )
    tools = [cmd for cmd in TOOLS if shutil.which(cmd[0])]
    if not tools:
        raise UnreadableFile(
            "it is a legacy Word .doc file and neither catdoc nor antiword is installed; install one "
            "(make browser, or apt-get install catdoc), or save it as .docx in Word or WPS and add that file",
            "legacy_doc",
        )
    text, errors, empty = "", [], False
    with tempfile.TemporaryDirectory(prefix="qa-doc-") as tmp:
        file = Path(tmp) / "document.doc"
        file.write_bytes(raw)
        for cmd in tools:
            try:
                done = subprocess.run([*cmd, str(file)], capture_output=True, timeout=TOOL_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                errors.append(f"{cmd[0]} ran past {TOOL_TIMEOUT_S} s")
                continue
            text = clean(done.stdout.decode("utf-8", errors="replace"))
            if done.returncode == 0 and text:
                break
            empty = empty or done.returncode == 0
            errors.append(f"{cmd[0]}: {done.stderr.decode('utf-8', 'replace').strip() or f'exit {done.returncode}'}")
            text = ""
    if not text:
        if empty:
            raise UnreadableFile("it has no text", "empty")
        raise UnreadableFile(
            f"it is a damaged or password-protected .doc file ({'; '.join(errors)}); open it in Word or WPS, "
            f"save it as .docx and add that file",
            "broken",
        )
    title = short_title(heading_title(text) or file_title(path))
    return Document(path=path, title=title, text=text, sha256=hashlib.sha256(raw).hexdigest())


def clean(text: str) -> str:
    """One paragraph per line: whitespace runs closed up, form feeds and empty lines dropped."""
    lines = (re.sub(r"[ \t\u3000\xa0]+", " ", line).strip() for line in re.split(r"[\r\n\f\v]+", text))
    return "\n".join(line for line in lines if line)
