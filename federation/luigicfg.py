"""Luigi's own configuration (``luigi.cfg`` / ``luigi.toml``), read the way ``luigid`` reads it.

A luigid deployment keeps its scheduler policy in Luigi's configuration: ``[scheduler]`` and
``[resources]``, found through Luigi's search path (``/etc/luigi/luigi.cfg``, ``luigi.cfg`` in the
working directory, then ``$LUIGI_CONFIG_PATH``; ``luigi.toml`` and ``/etc/luigi/luigi.toml`` with
``LUIGI_CONFIG_PARSER=toml``).  :func:`read_luigi_config` asks Luigi's own parser
(``luigi.configuration.get_config()``) for those sections, so interpolation (``%(x)s``,
``${ENV}``), dash spellings (``retry-delay``, read by luigid from ``.cfg`` files only), ``[DEFAULT]``
and the order of the files are exactly luigid's.  It also says which file each value came from,
and notes what luigid would ignore (unknown keys) or what the federation does not do
(``[cors]``).  :mod:`federation.config` layers the result under ``federation.toml``.
"""

from __future__ import annotations

import configparser
import os
import tomllib
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from federation.errors import ConfigError

SCHEDULER = "scheduler"
RESOURCES = "resources"
CORS = "cors"


@dataclass(frozen=True, slots=True)
class LuigiValue:
    """One setting as Luigi's parser returns it (text from a ``.cfg``, a TOML value), and where."""

    raw: Any
    file: str
    #: the key as written in the file (``retry-delay``, ``retry_delay``)
    key: str
    section: str

    @property
    def source(self) -> str:
        return f"{self.file} [{self.section}] {self.key}"


@dataclass(frozen=True, slots=True)
class LuigiConfig:
    """What luigid would take from Luigi's configuration, with the file of each value."""

    #: ``cfg`` or ``toml`` (``LUIGI_CONFIG_PARSER``)
    parser: str = "cfg"
    #: every path Luigi looks at, lowest precedence first (absolute)
    search_path: tuple[str, ...] = ()
    #: the files of the search path that exist and were read
    files: tuple[str, ...] = ()
    #: luigid's ``[scheduler]`` keys that are set, by their underscore name
    scheduler: dict[str, LuigiValue] = field(default_factory=dict)
    #: ``[resources]``: resource name -> capacity
    resources: dict[str, LuigiValue] = field(default_factory=dict)
    #: things luigid ignores or the federation does not do, one sentence each (warned at start)
    notes: tuple[str, ...] = ()


def known_scheduler_keys() -> set[str]:
    from federation.config import SchedulerConfig

    return {f.name for f in fields(SchedulerConfig)} - {"resources"}


def read_luigi_config(env: Any = None) -> LuigiConfig:
    """Luigi's configuration as luigid sees it in this process (``luigi.configuration.get_config()``).

    Raises :class:`ConfigError` naming the file (and key) for a file Luigi cannot parse or a value
    it cannot interpolate.
    """
    env = os.environ if env is None else env
    try:
        import luigi.configuration as lc
        from luigi.configuration.cfg_parser import LuigiConfigParser
        from luigi.configuration.toml_parser import LuigiTomlParser
    except configparser.Error as e:  # `import luigi` reads luigi.cfg already (luigi.setup_logging)
        raise _unreadable(e) from None
    except ValueError as e:  # ... or luigi.toml, whose reader (the toml package) raises ValueErrors
        paths = ["/etc/luigi/luigi.toml", "luigi.toml", env.get("LUIGI_CONFIG_PATH", "")]
        raise _unreadable_toml(e, paths) from None
    except ImportError as e:
        # LUIGI_CONFIG_PARSER=toml (or LUIGI_CONFIG_PATH=x.toml) without the toml package: `import
        # luigi` itself fails, in luigid and in Luigi's workers alike
        settings = ", ".join(
            f"{k}={env[k]}" for k in ("LUIGI_CONFIG_PARSER", "LUIGI_CONFIG_PATH") if k in env
        )
        raise ConfigError(
            f"Luigi cannot load its configuration ({settings or 'defaults'}): {_one_line(e)}"
        ) from None
    notes: list[str] = []
    name = env.get("LUIGI_CONFIG_PARSER", lc.core.DEFAULT_PARSER)
    if name not in lc.core.PARSERS:
        notes.append(
            f"LUIGI_CONFIG_PARSER={name!r} is not a Luigi parser (cfg or toml); "
            "luigid falls back to cfg and so does the federation"
        )
        name = lc.core.DEFAULT_PARSER
    kind = "toml" if name == "toml" else "cfg"
    cls = LuigiTomlParser if kind == "toml" else LuigiConfigParser
    search = tuple(os.path.abspath(p) for p in cls._config_paths)
    extra = env.get("LUIGI_CONFIG_PATH")
    if extra:
        if not os.path.isfile(extra):
            notes.append(f"LUIGI_CONFIG_PATH={extra}: no such file; luigid starts without it too")
        elif os.path.abspath(extra) not in search:
            notes.append(
                f"LUIGI_CONFIG_PATH={extra} is read only with LUIGI_CONFIG_PARSER="
                f"{'cfg' if kind == 'toml' else 'toml'}; luigid ignores it under {kind} and so does "
                "the federation"
            )
    if kind == "toml":
        return _from_toml(_luigi_parser(lc, name).data, search, notes)
    return _from_cfg(_luigi_parser(lc, name), search, notes)


def _luigi_parser(lc: Any, name: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return lc.get_config(name)
    except configparser.Error as e:
        raise _unreadable(e) from None
    except (ValueError, TypeError) as e:  # the toml package's errors
        raise _unreadable_toml(e, list(lc.core.PARSERS["toml"]._config_paths)) from None


def _unreadable_toml(e: Exception, paths: list[str]) -> ConfigError:
    """Luigi's TOML reader names no file in its errors: find the one that does not parse."""
    for path in paths:
        if path and os.path.isfile(path):
            try:
                with open(path, "rb") as f:
                    tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError):
                return ConfigError(
                    f"not a valid Luigi TOML file (luigid cannot start either): {_one_line(e)}",
                    source=os.path.abspath(path),
                )
    return ConfigError(f"Luigi cannot read its TOML configuration: {_one_line(e)}")


def _unreadable(e: configparser.Error) -> ConfigError:
    path = getattr(e, "source", None)
    return ConfigError(
        f"not a valid Luigi config file (luigid cannot start either): {_one_line(e)}",
        source=os.path.abspath(path) if isinstance(path, str) else "",
    )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


# -- .cfg ------------------------------------------------------------------------------------------


def _cfg_files(search: tuple[str, ...]) -> list[tuple[str, configparser.ConfigParser]]:
    """Each existing file on its own, ``[DEFAULT]`` kept as a plain section, to tell who wrote what."""
    out = []
    for path in search:
        if not os.path.isfile(path):
            continue
        # no default section: a [DEFAULT] key then shows under DEFAULT only, not in every section
        cp = configparser.ConfigParser(interpolation=None, default_section="\0", strict=False)
        cp.optionxform = str  # type: ignore[assignment,method-assign]  # Luigi's keys keep their case
        try:
            cp.read(path)
        except configparser.Error as e:
            raise ConfigError(f"not a valid Luigi config file: {_one_line(e)}", source=path) from None
        out.append((path, cp))
    return out


def _from_cfg(parser: Any, search: tuple[str, ...], notes: list[str]) -> LuigiConfig:
    files = _cfg_files(search)
    known = known_scheduler_keys()

    def writer(section: str, key: str) -> tuple[str, str] | None:
        """The last file that writes ``key`` in ``section`` or [DEFAULT] (a scheduler key: or its
        dash spelling, which luigid reads when the underscore one is nowhere)."""
        spellings = (key, key.replace("_", "-")) if section == SCHEDULER else (key,)
        for spelling in spellings:
            for sect in (section, "DEFAULT"):
                for path, cp in reversed(files):
                    if cp.has_section(sect) and cp.has_option(sect, spelling):
                        return path, spelling if sect == section else f"{spelling} (from [DEFAULT])"
        return None

    def value(section: str, key: str, where: tuple[str, str]) -> LuigiValue | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Luigi's DeprecationWarning for dash spellings
                raw = parser.get(section, key)
        except (configparser.NoSectionError, configparser.NoOptionError):
            return None  # e.g. a [DEFAULT] key with no [scheduler] section: luigid's default then
        except (configparser.Error, KeyError) as e:
            raise ConfigError(f"[{section}] {where[1]}: {_one_line(e)}", source=where[0]) from None
        return LuigiValue(raw, where[0], where[1], section)

    scheduler: dict[str, LuigiValue] = {}
    for key in sorted(known):
        where = writer(SCHEDULER, key)
        found = value(SCHEDULER, key, where) if where is not None else None
        if found is not None:
            scheduler[key] = found
    for path, cp in files:
        if cp.has_section(SCHEDULER):
            for key in cp.options(SCHEDULER):
                if key.replace("-", "_") not in known:
                    notes.append(
                        f"{path} [scheduler] {key}: not a luigid setting (luigid ignores it); ignored"
                    )

    # luigid: configuration.get_config().getintdict("resources"), [DEFAULT] keys left out
    resources: dict[str, LuigiValue] = {}
    defaults = set(parser.defaults()) if hasattr(parser, "defaults") else set()
    if parser.has_section(RESOURCES):
        try:
            items = parser.items(RESOURCES)
        except configparser.Error as e:
            raise ConfigError(f"[resources]: {_one_line(e)}", source=", ".join(p for p, _ in files)) from None
        for key, raw in items:
            if key not in defaults:
                where = writer(RESOURCES, key) or (search[-1], key)
                resources[key] = LuigiValue(raw, where[0], key, RESOURCES)

    if parser.has_section(CORS) and parser.has_option(CORS, "enabled"):
        where = writer(CORS, "enabled") or (search[-1], "enabled")
        enabled = value(CORS, "enabled", where)
        if enabled is not None and str(enabled.raw).strip().lower() == "true":
            notes.append(
                f"{where[0]} [cors] enabled = true: not honoured; the federation's HTTP gateway "
                "sends no CORS headers (call it from the same origin, or put a proxy in front)"
            )
    return LuigiConfig(
        "cfg", search, tuple(p for p, _ in files), scheduler, resources, tuple(dict.fromkeys(notes))
    )


# -- .toml -----------------------------------------------------------------------------------------


def _load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", source=path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", source=path) from None


def _merge_toml(search: tuple[str, ...]) -> dict[str, Any]:
    """Luigi's ``LuigiTomlParser.read``: later files update earlier ones section by section."""
    data: dict[str, Any] = {}
    for path in search:
        if os.path.isfile(path):
            for section, content in _load_toml(path).items():
                if isinstance(content, dict):
                    data.setdefault(section, {}).update(content)
    return data


def _from_toml(data: dict[str, Any], search: tuple[str, ...], notes: list[str]) -> LuigiConfig:
    files = [(p, _load_toml(p)) for p in search if os.path.isfile(p)]
    known = known_scheduler_keys()

    def writer(section: str, key: str) -> str:
        for path, content in reversed(files):
            table = content.get(section)
            if isinstance(table, dict) and key in table:
                return path
        return search[-1]

    scheduler: dict[str, LuigiValue] = {}
    resources: dict[str, LuigiValue] = {}
    sched = data.get(SCHEDULER) or {}
    for key, raw in dict(sched).items():
        if key in known:
            scheduler[key] = LuigiValue(raw, writer(SCHEDULER, key), key, SCHEDULER)
        elif key.replace("-", "_") in known:
            notes.append(
                f"{writer(SCHEDULER, key)} [scheduler] {key}: Luigi's TOML reader knows only "
                f"{key.replace('-', '_')!r} (luigid ignores {key!r}); ignored"
            )
        else:
            notes.append(
                f"{writer(SCHEDULER, key)} [scheduler] {key}: not a luigid setting (luigid ignores it); ignored"
            )
    for key, raw in dict(data.get(RESOURCES) or {}).items():
        resources[str(key)] = LuigiValue(raw, writer(RESOURCES, key), str(key), RESOURCES)
    cors = data.get(CORS) or {}
    if str(dict(cors).get("enabled", "")).lower() == "true":
        notes.append(
            f"{writer(CORS, 'enabled')} [cors] enabled = true: not honoured; the federation's HTTP "
            "gateway sends no CORS headers (call it from the same origin, or put a proxy in front)"
        )
    return LuigiConfig(
        "toml", search, tuple(p for p, _ in files), scheduler, resources, tuple(dict.fromkeys(notes))
    )


def from_files(paths: list[str], parser: str = "cfg") -> LuigiConfig:
    """Read ``paths`` (lowest precedence first) with a fresh Luigi parser of the given kind.

    The same reading as :func:`read_luigi_config` without Luigi's process-wide singleton or
    ``LUIGI_CONFIG_PATH``: for tests and tools that look at a given file.
    """
    search = tuple(os.path.abspath(p) for p in paths)
    notes: list[str] = []
    if parser == "toml":
        from luigi.configuration.toml_parser import LuigiTomlParser

        if LuigiTomlParser.enabled:
            toml_parser = LuigiTomlParser()
            return _from_toml(toml_parser.read(search), search, notes)
        return _from_toml(_merge_toml(search), search, notes)
    from luigi.configuration.cfg_parser import LuigiConfigParser

    luigi_parser = LuigiConfigParser()
    try:
        luigi_parser.read(search)
    except configparser.Error as e:
        raise _unreadable(e) from None
    return _from_cfg(luigi_parser, search, notes)
