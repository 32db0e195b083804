"""Effective settings for a workspace: defaults < user config < workspace < request.

Both settings files are JSONC (JSON with ``//`` and ``/* */`` comments and trailing
commas, as VS Code writes them), read by the small parser at the top of this module. The
result records where each value came from, so ``runforgectl settings`` can show it.

Which source may set which key:

============================  ====  =========  =======
key                           user  workspace  request
============================  ====  =========  =======
pythonPath, mlRunnerModule    yes   yes        yes
datasetPath, labelColumn      yes   yes        yes
modelFamily                   yes   yes        yes
profile, preset, device       yes   yes        yes
cancelGraceSeconds            yes   yes        yes
maxConcurrentRuns             yes   yes        no
maxConcurrentRunsGlobal       yes   no         no
executor, rayAddress          yes   yes        yes
rayResources, rayEnvVars      yes   yes        no
maxLogBytes                   yes   yes        no
============================  ====  =========  =======

A workspace is someone else's repository as often as it is the user's own, so it must not
raise a limit that protects the whole machine; a global key found in a workspace file is
ignored with a warning. Limits are daemon policy, not a property of one run, so requests
cannot set them. Unknown keys are ignored with a warning; a wrong type or value is a
``SETTINGS_INVALID`` error naming the file, the key and the line. A settings file larger
than ``MAX_SETTINGS_FILE_BYTES`` is refused with the same error rather than read (a
workspace may be hostile); reading is done off the event loop (``Services``).
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import MAX_GRACE_S
from runforge_protocol.payloads import (
    DEFAULT_RAY_ADDRESS,
    Device,
    Executor,
    ModelFamily,
    Preset,
    Profile,
    ResolvedSettings,
    SettingOrigin,
    SettingSource,
    SettingsWarning,
)
from runforged.errors import RunforgeError
from runforged.ray_jobs import check_address

# --- JSONC -------------------------------------------------------------------------------

MAX_SETTINGS_FILE_BYTES = 4 * 1024 * 1024
_MAX_DEPTH = 256  # deeper nesting is hostile, not a settings file; fail before Python does
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]*')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS: tuple[tuple[str, Any], ...] = (("true", True), ("false", False), ("null", None))


class JsoncError(ValueError):
    """A JSONC syntax error at ``line``:``column`` (both 1-based)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.reason = message
        self.line = line
        self.column = column


class _JsoncParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 1 if text.startswith("\ufeff") else 0
        # Line of each key of the top-level object, so settings errors can point at it.
        self.top_level_key_lines: dict[str, int] = {}
        # Lines are counted forward from the last position asked about, so that the parse
        # stays linear in the size of the file (asking from the start each time was
        # quadratic: 7 s for a 570 KiB settings.json).
        self._line_pos = 0
        self._line = 1

    def line_at(self, pos: int) -> int:
        if pos < self._line_pos:  # only error paths go backwards
            return self.text.count("\n", 0, pos) + 1
        self._line += self.text.count("\n", self._line_pos, pos)
        self._line_pos = pos
        return self._line

    def error(self, message: str, pos: int | None = None) -> JsoncError:
        at = self.pos if pos is None else pos
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        return JsoncError(message, self.line_at(at), column)

    def skip_trivia(self) -> None:
        text, end = self.text, len(self.text)
        while self.pos < end:
            char = text[self.pos]
            if char in " \t\r\n":
                self.pos += 1
            elif text.startswith("//", self.pos):
                newline = text.find("\n", self.pos)
                self.pos = end if newline < 0 else newline
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close < 0:
                    raise self.error("unterminated /* comment")
                self.pos = close + 2
            else:
                return

    def at_end(self) -> bool:
        self.skip_trivia()
        return self.pos >= len(self.text)

    def document(self) -> Any:
        value = self.value(0)
        if not self.at_end():
            raise self.error("unexpected content after the JSON value")
        return value

    def value(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise self.error(f"nested deeper than {_MAX_DEPTH} levels")
        self.skip_trivia()
        if self.pos >= len(self.text):
            raise self.error("unexpected end of input, expected a value")
        char = self.text[self.pos]
        if char == "{":
            return self.object(depth)
        if char == "[":
            return self.array(depth)
        if char == '"':
            return self.string()
        if char == "-" or char.isdigit():
            return self.number()
        for word, literal in _LITERALS:
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return literal
        raise self.error(f"unexpected character {char!r}, expected a value")

    def object(self, depth: int) -> dict[str, Any]:
        self.pos += 1
        members: dict[str, Any] = {}
        while True:
            self.skip_trivia()
            if self.text.startswith("}", self.pos):
                self.pos += 1
                return members
            if not self.text.startswith('"', self.pos):
                raise self.error("expected a property name in double quotes or '}'")
            key_line = self.line_at(self.pos)
            key = self.string()
            self.skip_trivia()
            if not self.text.startswith(":", self.pos):
                raise self.error("expected ':' after the property name")
            self.pos += 1
            members[key] = self.value(depth + 1)
            if depth == 0:
                self.top_level_key_lines[key] = key_line
            self.skip_trivia()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("}", self.pos):
                raise self.error("expected ',' or '}' after the property value")

    def array(self, depth: int) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        while True:
            self.skip_trivia()
            if self.text.startswith("]", self.pos):
                self.pos += 1
                return items
            items.append(self.value(depth + 1))
            self.skip_trivia()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("]", self.pos):
                raise self.error("expected ',' or ']' after the array element")

    def string(self) -> str:
        start = self.pos
        self.pos += 1
        chunks: list[str] = []
        text = self.text
        while True:
            run = _STRING_RUN.match(text, self.pos)
            assert run is not None  # the pattern matches the empty string
            chunks.append(run.group())
            self.pos = run.end()
            if self.pos >= len(text):
                raise self.error("unterminated string", start)
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(chunks)
            if char != "\\":
                raise self.error("control character in string (escape it)")
            escape = text[self.pos + 1 : self.pos + 2]
            if escape in _ESCAPES:
                chunks.append(_ESCAPES[escape])
                self.pos += 2
            elif escape == "u":
                chunks.append(self.unicode_escape())
            else:
                raise self.error("invalid escape in string")

    def unicode_escape(self) -> str:
        code = self.hex4(self.pos + 2)
        self.pos += 6
        # A UTF-16 surrogate pair written as two escapes is one character, as in JSON.
        if 0xD800 <= code <= 0xDBFF and self.text.startswith("\\u", self.pos):
            low = self.hex4(self.pos + 2)
            if 0xDC00 <= low <= 0xDFFF:
                self.pos += 6
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
        return chr(code)

    def hex4(self, at: int) -> int:
        digits = self.text[at : at + 4]
        if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise self.error("invalid \\u escape, expected four hex digits", at)
        return int(digits, 16)

    def number(self) -> int | float:
        match = _NUMBER.match(self.text, self.pos)
        if match is None:
            raise self.error("invalid number")
        self.pos = match.end()
        if match.group(1) is None and match.group(2) is None:
            try:
                return int(match.group())
            except ValueError:  # beyond Python's int-from-text digit limit
                raise self.error("number has too many digits", match.start()) from None
        return float(match.group())


def parse_jsonc(text: str) -> Any:
    """Parse one JSONC document: JSON plus ``//`` and ``/* */`` comments and trailing
    commas. Raises :class:`JsoncError` with the line and column of the first problem."""
    return _JsoncParser(text).document()


def _parse_jsonc_object(text: str) -> tuple[dict[str, Any], dict[str, int]]:
    """A settings file: an object (an empty or comment-only file counts as ``{}``, as in VS
    Code), with the line of each top-level key."""
    parser = _JsoncParser(text)
    if parser.at_end():
        return {}, {}
    if not parser.text.startswith("{", parser.pos):
        raise parser.error("a settings file must contain a JSON object")
    members = parser.document()
    return members, parser.top_level_key_lines


# --- Settings ----------------------------------------------------------------------------

USER_CONFIG_FILE = "config.json"
WORKSPACE_SETTINGS_FILE = Path(".vscode") / "settings.json"
WORKSPACE_KEY_PREFIX = "runforge."
WORKSPACE_FOLDER_VARIABLE = "${workspaceFolder}"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class _InvalidValue(ValueError):
    """A setting's value is unusable; the text completes "<key> must be ..."."""


def _choice(allowed: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed or not isinstance(value, str):
            raise _InvalidValue("one of " + ", ".join(repr(a) for a in allowed))
        return value

    return check


def _path_string(value: Any) -> Any:
    if not isinstance(value, str) or not value or "\0" in value:
        raise _InvalidValue("a non-empty path string")
    return value


def _optional_path_string(value: Any) -> Any:
    return None if value is None else _path_string(value)


def _optional_column(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\0" in value or "\n" in value:
        raise _InvalidValue("a column name (a non-empty string on one line)")
    return value


def _module_name(value: Any) -> Any:
    # The value lands after `-m`: anything but a dotted module name could inject options.
    if not isinstance(value, str) or not _MODULE_NAME.fullmatch(value):
        raise _InvalidValue("a dotted Python module name such as 'runforge_runner'")
    return value


def _seconds(value: Any) -> Any:
    # Bounded like a request's grace_s: 1e300 seconds would overflow the cancel countdown.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _InvalidValue(f"a number of seconds from 0 to {MAX_GRACE_S:g}")
    if not 0 <= value <= MAX_GRACE_S:
        raise _InvalidValue(f"a number of seconds from 0 to {MAX_GRACE_S:g}")
    return float(value)


def _log_cap(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= 1 << 40:
        raise _InvalidValue("an integer of bytes from 1024 to 2**40")
    return value


def _positive_int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _InvalidValue("an integer >= 1")
    return value


def _ray_address(value: Any) -> Any:
    # Checked by the Job API client itself, so both agree on what an address is.
    if not isinstance(value, str):
        raise _InvalidValue("an http:// or https:// address of the Ray dashboard")
    try:
        return check_address(value)
    except ValueError as exc:
        raise _InvalidValue(str(exc)) from None


def _resources(value: Any) -> Any:
    # Ray's resource names: CPU, GPU, memory or a custom one; amounts are >= 0.
    message = 'an object of resource amounts >= 0, such as {"CPU": 2, "GPU": 1}'
    if not isinstance(value, dict):
        raise _InvalidValue(message)
    for name, amount in value.items():
        if not name or isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise _InvalidValue(message)
        if not math.isfinite(amount) or amount < 0:
            raise _InvalidValue(message)
    return {name: float(amount) for name, amount in value.items()}


def _env_names(value: Any) -> Any:
    message = 'a list of environment variable names, a trailing * for a prefix ("WANDB_*")'
    if not isinstance(value, list) or not all(
        isinstance(name, str) and _ENV_NAME.fullmatch(name) for name in value
    ):
        raise _InvalidValue(message)
    return list(value)


@dataclass(frozen=True)
class _Setting:
    key: str
    attribute: str
    check: Callable[[Any], Any]
    workspace_may_set: bool = True
    request_may_set: bool = True


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("pythonPath", "python_path", _path_string),
    _Setting("mlRunnerModule", "ml_runner_module", _module_name),
    _Setting("datasetPath", "dataset_path", _optional_path_string),
    _Setting("labelColumn", "label_column", _optional_column),
    _Setting("modelFamily", "model_family", _choice(get_args(ModelFamily))),
    _Setting("profile", "profile", _choice(get_args(Profile))),
    _Setting("preset", "preset", _choice(get_args(Preset))),
    _Setting("device", "device", _choice(get_args(Device))),
    _Setting("cancelGraceSeconds", "cancel_grace_seconds", _seconds),
    _Setting("maxConcurrentRuns", "max_concurrent_runs", _positive_int, request_may_set=False),
    _Setting(
        "maxConcurrentRunsGlobal",
        "max_concurrent_runs_global",
        _positive_int,
        workspace_may_set=False,
        request_may_set=False,
    ),
    _Setting("executor", "executor", _choice(get_args(Executor))),
    _Setting("rayAddress", "ray_address", _ray_address),
    _Setting("rayResources", "ray_resources", _resources, request_may_set=False),
    _Setting("rayEnvVars", "ray_env_vars", _env_names, request_may_set=False),
    _Setting("maxLogBytes", "max_log_bytes", _log_cap, request_may_set=False),
)
_BY_KEY = {setting.key: setting for setting in _SETTINGS}
SETTING_KEYS: tuple[str, ...] = tuple(_BY_KEY)


def _defaults(default_python: str) -> dict[str, Any]:
    return {
        "pythonPath": default_python,
        "mlRunnerModule": "runforge_runner",
        "datasetPath": None,
        "labelColumn": None,
        "modelFamily": "logistic_regression",
        "profile": "default",
        "preset": "std-train",
        "device": "auto",
        "cancelGraceSeconds": 5.0,
        "maxConcurrentRuns": 1,
        "maxConcurrentRunsGlobal": 4,
        "executor": "local",
        "rayAddress": DEFAULT_RAY_ADDRESS,
        "rayResources": {},
        "rayEnvVars": [],
        "maxLogBytes": 64 << 20,
    }


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$RUNFORGE_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/runforge``, else
    ``~/.config/runforge``. Holds the user config and the trust store."""
    env = os.environ if environ is None else environ
    explicit = env.get("RUNFORGE_CONFIG_DIR", "")
    if explicit:
        return Path(explicit)
    xdg = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "runforge"
    return Path.home() / ".config" / "runforge"


def user_config_path(config_directory: Path) -> Path:
    return config_directory / USER_CONFIG_FILE


def workspace_settings_path(workspace: Path) -> Path:
    return workspace / WORKSPACE_SETTINGS_FILE


def _invalid(message: str, file: str | None, **details: Any) -> RunforgeError:
    return RunforgeError(
        ErrorCode.SETTINGS_INVALID,
        message,
        remediation=f"correct {file}" if file else "correct the request's settings",
        details={"file": file, **details},
    )


def _read_settings_file(path: Path) -> tuple[dict[str, Any], dict[str, int]] | None:
    """The file's object and key lines, or None if there is no such file."""
    try:
        # O_NONBLOCK: a FIFO planted as settings.json must not hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _invalid(f"cannot read settings file {path}: {exc}", str(path)) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _invalid(f"settings file {path} is not a regular file", str(path))
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_SETTINGS_FILE_BYTES + 1)
    except OSError as exc:
        raise _invalid(f"cannot read settings file {path}: {exc}", str(path)) from exc
    if len(data) > MAX_SETTINGS_FILE_BYTES:
        raise _invalid(
            f"settings file {path} is larger than {MAX_SETTINGS_FILE_BYTES // (1024 * 1024)} "
            f"MiB; refusing to read it",
            str(path),
            limit_bytes=MAX_SETTINGS_FILE_BYTES,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"cannot read settings file {path}: {exc}", str(path)) from exc
    try:
        return _parse_jsonc_object(text)
    except JsoncError as exc:
        raise _invalid(
            f"{path}:{exc.line}:{exc.column}: {exc.reason}",
            str(path),
            line=exc.line,
            column=exc.column,
        ) from exc


def _checked(
    setting: _Setting, value: Any, *, shown_key: str, file: str | None, line: int | None
) -> Any:
    try:
        return setting.check(value)
    except _InvalidValue as exc:
        place = f"{file}:{line}: " if file else "request: "
        raise _invalid(
            f"{place}{shown_key} must be {exc}, got {value!r}",
            file,
            line=line,
            key=setting.key,
            value=value,
        ) from exc


def _anchor_path(value: str, workspace: Path, *, bare_name_allowed: bool) -> str:
    """Expand ``${workspaceFolder}`` and make relative paths workspace-relative. A bare
    interpreter name (``python3``) stays as is: it is looked up on PATH when run."""
    expanded = value.replace(WORKSPACE_FOLDER_VARIABLE, str(workspace))
    if os.path.isabs(expanded) or (bare_name_allowed and os.sep not in expanded):
        return expanded
    return str(workspace / expanded)


def resolve_settings(
    workspace: Path,
    *,
    config_directory: Path,
    overrides: Mapping[str, Any] | None = None,
    default_python: str = sys.executable,
) -> ResolvedSettings:
    """Effective settings for ``workspace`` (absolute, resolved: see
    ``paths.validate_workspace``). ``overrides`` are per-request values keyed by setting
    name (``{"preset": "hq-train"}``). Reading settings executes nothing, so it needs no
    trust."""
    values = _defaults(default_python)
    origins = {key: SettingOrigin(source=SettingSource.DEFAULT) for key in values}
    warnings: list[SettingsWarning] = []

    user_file = user_config_path(config_directory)
    loaded = _read_settings_file(user_file)
    if loaded is not None:
        members, lines = loaded
        for key, value in members.items():
            line = lines.get(key)
            setting = _BY_KEY.get(key)
            if setting is None:
                warnings.append(
                    SettingsWarning(
                        key=key, message="unknown setting, ignored", file=str(user_file), line=line
                    )
                )
                continue
            values[key] = _checked(setting, value, shown_key=key, file=str(user_file), line=line)
            origins[key] = SettingOrigin(source=SettingSource.USER, file=str(user_file), line=line)

    workspace_file = workspace_settings_path(workspace)
    loaded = _read_settings_file(workspace_file)
    if loaded is not None:
        members, lines = loaded
        for prefixed, value in members.items():
            if not prefixed.startswith(WORKSPACE_KEY_PREFIX):
                continue  # other extensions' settings
            key = prefixed[len(WORKSPACE_KEY_PREFIX) :]
            line = lines.get(prefixed)
            setting = _BY_KEY.get(key)
            if setting is None or not setting.workspace_may_set:
                reason = (
                    "unknown setting, ignored"
                    if setting is None
                    else "only the user config file may set this, ignored"
                )
                warnings.append(
                    SettingsWarning(
                        key=prefixed, message=reason, file=str(workspace_file), line=line
                    )
                )
                continue
            values[key] = _checked(
                setting, value, shown_key=prefixed, file=str(workspace_file), line=line
            )
            origins[key] = SettingOrigin(
                source=SettingSource.WORKSPACE, file=str(workspace_file), line=line
            )

    for key, value in (overrides or {}).items():
        setting = _BY_KEY.get(key)
        if setting is None or not setting.request_may_set:
            raise _invalid(f"request: {key} cannot be set per request", None, key=key, value=value)
        values[key] = _checked(setting, value, shown_key=key, file=None, line=None)
        origins[key] = SettingOrigin(source=SettingSource.REQUEST)

    values["pythonPath"] = _anchor_path(values["pythonPath"], workspace, bare_name_allowed=True)
    if values["datasetPath"] is not None:
        values["datasetPath"] = _anchor_path(
            values["datasetPath"], workspace, bare_name_allowed=False
        )

    return ResolvedSettings(
        workspace=str(workspace),
        origins=origins,
        warnings=warnings,
        user_config_file=str(user_file),
        workspace_settings_file=str(workspace_file),
        **{_BY_KEY[key].attribute: value for key, value in values.items()},
    )
