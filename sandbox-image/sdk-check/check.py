"""Drives a running sandbox-server with the public agent-sandbox SDK, making the calls that
DeerFlow's AioSandbox makes, and checks that the SDK parses every answer. Usage:
check.py BASE_URL API_KEY WORK_DIR. Exits non-zero, naming the call, on the first failure."""

import base64
import sys
import uuid

from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError

base_url, key, work = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/")


def check(what, condition, seen):
    if not condition:
        sys.exit(f"FAILED {what}: got {seen!r}")
    print(f"ok   {what}")


# Without the key: every call but ping is refused.
try:
    Sandbox(base_url=base_url, timeout=30).sandbox.get_context()
    sys.exit("FAILED a call without the key was answered")
except ApiError as e:
    check("no key is 401", e.status_code == 401, e.status_code)

client = Sandbox(base_url=base_url, timeout=30, headers={"X-AIO-API-Key": key})

context = client.sandbox.get_context()
check("sandbox.get_context home_dir", bool(context.home_dir), context.home_dir)

session = str(uuid.uuid4())
client.shell.create_session(id=session)
result = client.shell.exec_command(command=f"mkdir -p {work}/s && cd {work}/s && id -u",
                                   id=session, no_change_timeout=600)
check("shell.exec_command output", result.data.output.strip().isdigit(), result.data.output)
check("shell.exec_command exit_code", result.data.exit_code == 0, result.data.exit_code)
result = client.shell.exec_command(command="pwd", id=session, no_change_timeout=600)
check("the session kept its directory", result.data.output.strip() == f"{work}/s",
      result.data.output)
result = client.shell.exec_command(command="exit 7", no_change_timeout=600)
check("a failing command's exit code", result.data.exit_code == 7, result.data.exit_code)
client.shell.cleanup_session(session)

result = client.bash.exec(command="echo $TOKEN; echo oops >&2; exit 2", env={"TOKEN": "t0k"},
                          hard_timeout=600.0)
check("bash.exec stdout", result.data.stdout == "t0k\n", result.data.stdout)
check("bash.exec stderr", result.data.stderr == "oops\n", result.data.stderr)
check("bash.exec exit_code", result.data.exit_code == 2, result.data.exit_code)

client.file.write_file(file=f"{work}/notes/a.md", content="alpha\nBeta\ngamma\n")
payload = bytes(range(256))
client.file.write_file(file=f"{work}/notes/b.bin",
                       content=base64.b64encode(payload).decode(), encoding="base64")
read = client.file.read_file(file=f"{work}/notes/a.md", start_line=1, end_line=2)
check("file.read_file lines", read.data.content == "Beta\n", read.data.content)
found = client.file.find_files(path=f"{work}/notes", glob="*.md")
check("file.find_files", found.data.files == [f"{work}/notes/a.md"], found.data.files)
listed = client.file.list_path(path=work, recursive=True, show_hidden=False)
paths = sorted(entry.path for entry in listed.data.files)
check("file.list_path", f"{work}/notes/b.bin" in paths, paths)
grep = client.file.grep_files(path=work, pattern="beta", case_insensitive=True,
                              fixed_strings=False, max_results=50, max_file_size="1M",
                              recursive=True)
check("file.grep_files", [(m.file, m.line_number, m.line_content) for m in grep.data.matches]
      == [(f"{work}/notes/a.md", 2, "Beta")], grep.data.matches)
downloaded = b"".join(client.file.download_file(path=f"{work}/notes/b.bin"))
check("file.download_file bytes", downloaded == payload, len(downloaded))
print("the SDK parsed every answer")
