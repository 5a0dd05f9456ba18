#!/usr/bin/env python3
"""Checks of the deployment files that no off-the-shelf validator makes.

Called by deploy/validate.sh (which also runs docker compose, kustomize, hadolint,
shellcheck and kubernetes-validate); each subcommand prints what it checked and exits
non-zero with one line per problem.

  validate.py dockerfile                     Dockerfile ↔ workspace binaries, runtime user
  validate.py compose CONFIG_JSON            resolved compose model (docker compose config --format json)
  validate.py env-example                    .env.example ↔ docker-compose.yml ↔ config keys
  validate.py otel                           deploy/otel-collector.yaml structure
  validate.py kustomize-files                every file a kustomization.yaml names exists and parses
  validate.py k8s NAME BUILT_YAML OUT_DIR    policy + KEDA schemas on `kustomize build` output;
                                             writes OUT_DIR/NAME-core.yaml for kubernetes-validate
  validate.py probe                          deploy/docker/fwdwatch-probe against a local server
  validate.py images                         official base images ↔ deploy/local-images.sh stand-ins
  validate.py scripts                        the image's setup/entrypoint scripts in temporary dirs

Configuration keys are read from shared/src/config.rs (the `Settings` structs), so a
FWDWATCH__… variable or a TOML key that the services would refuse at start-up
(`deny_unknown_fields`) fails here first.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG_RS = ROOT / "shared" / "src" / "config.rs"

# The binaries the image must contain: service crates are named after their package,
# the CLI is `fwdwatch`, the simulator `m365-sim`.
SERVICE_BINARIES = ["fwdwatch-enumerator", "fwdwatch-scanner", "fwdwatch-notifier", "fwdwatch-actioner"]
IMAGE_BINARIES = SERVICE_BINARIES + ["fwdwatch", "m365-sim"]
RUNTIME_UID = 10001
METRICS_PORT = 9464
ACTIONER_PORT = 8080
# A tenant scan can take minutes; KEDA must not scale a scanner in before it is done.
MIN_SCALE_DOWN_STABILIZATION_S = 600
MIN_SCANNER_GRACE_S = 60


class Problems:
    def __init__(self, title: str):
        self.title = title
        self.items: list[str] = []
        self.checked: list[str] = []

    def error(self, msg: str) -> None:
        self.items.append(msg)

    def ok(self, msg: str) -> None:
        self.checked.append(msg)

    def finish(self) -> int:
        for line in self.checked:
            print(f"  ok   {line}")
        for line in self.items:
            print(f"  FAIL {line}", file=sys.stderr)
        if self.items:
            print(f"{self.title}: {len(self.items)} problem(s)", file=sys.stderr)
            return 1
        print(f"{self.title}: ok")
        return 0


# ---------------------------------------------------------------------------------------
# Configuration keys, from shared/src/config.rs


class ConfigModel:
    """The `Settings` tree: struct name → {field: type string}."""

    STRUCT_RE = re.compile(r"pub struct (\w+)\s*\{(.*?)\n\}", re.S)
    FIELD_RE = re.compile(r"^\s*pub (\w+):\s*(.+?),\s*$", re.M)

    def __init__(self, source: str):
        self.structs: dict[str, dict[str, str]] = {}
        for name, body in self.STRUCT_RE.findall(source):
            fields = dict(self.FIELD_RE.findall(body))
            if fields:
                self.structs[name] = fields
        if "Settings" not in self.structs or "amqp" not in self.structs["Settings"]:
            raise SystemExit(f"cannot read the Settings structs from {CONFIG_RS}")

    @staticmethod
    def _strip_option(ty: str) -> str:
        ty = ty.strip()
        m = re.fullmatch(r"Option<(.+)>", ty)
        return m.group(1).strip() if m else ty

    def _map_value(self, ty: str) -> str | None:
        m = re.fullmatch(r"(?:BTreeMap|HashMap)<\s*[\w:]+\s*,\s*(.+)>", ty)
        return m.group(1).strip() if m else None

    def _vec_item(self, ty: str) -> str | None:
        m = re.fullmatch(r"Vec<(.+)>", ty)
        return m.group(1).strip() if m else None

    def resolve(self, path: list[str]) -> str | None:
        """Type of the value at `path` (lower-case segments), or None if no such key."""
        ty = "Settings"
        i = 0
        while i < len(path):
            ty = self._strip_option(ty)
            if ty in self.structs:
                fields = self.structs[ty]
                if path[i] not in fields:
                    return None
                ty = fields[path[i]]
                i += 1
                continue
            value = self._map_value(ty)
            if value is not None:
                ty = value  # any key
                i += 1
                continue
            return None  # a leaf cannot have children
        return self._strip_option(ty)

    def is_secret(self, path: list[str]) -> bool:
        ty = self.resolve(path)
        return ty is not None and "SecretString" in ty

    def env_path(self, name: str) -> list[str] | None:
        if not name.startswith("FWDWATCH__"):
            return None
        return [seg.lower() for seg in name[len("FWDWATCH__"):].split("__")]

    def check_env_name(self, name: str) -> str | None:
        """An error message, or None when FWDWATCH__… names a real key."""
        path = self.env_path(name)
        if path is None:
            return None
        ty = self.resolve(path)
        if ty is None:
            return f"{name}: no key {'.'.join(path)} in shared/src/config.rs"
        if ty in self.structs or self._map_value(ty) is not None:
            return f"{name}: {'.'.join(path)} is a section, not a value"
        return None

    def check_toml(self, data: dict, where: str, ty: str = "Settings", prefix: str = "") -> list[str]:
        errors: list[str] = []
        ty = self._strip_option(ty)
        if ty in self.structs:
            if not isinstance(data, dict):
                return [f"{where}: {prefix or 'root'} must be a table"]
            for key, value in data.items():
                full = f"{prefix}{key}"
                if key not in self.structs[ty]:
                    errors.append(f"{where}: unknown key `{full}` (services refuse it: deny_unknown_fields)")
                    continue
                errors += self.check_toml(value, where, self.structs[ty][key], full + ".")
            return errors
        value_ty = self._map_value(ty)
        if value_ty is not None:
            if not isinstance(data, dict):
                return [f"{where}: `{prefix[:-1]}` must be a table"]
            for key, value in data.items():
                errors += self.check_toml(value, where, value_ty, f"{prefix}{key}.")
            return errors
        item_ty = self._vec_item(ty)
        key = prefix[:-1]
        if item_ty is not None:
            if not isinstance(data, list):
                return [f"{where}: `{key}` must be an array"]
            for n, item in enumerate(data):
                errors += self.check_toml(item, where, item_ty, f"{prefix}{n}.")
            return errors
        expected = {
            "String": str, "SecretString": str, "PathBuf": str, "Duration": str, "LogFormat": str,
            "bool": bool, "u16": int, "u32": int, "u64": int, "usize": int, "i64": int,
        }.get(ty)
        if expected is not None and (not isinstance(data, expected) or isinstance(data, bool) != (expected is bool)):
            errors.append(f"{where}: `{key}` must be a {expected.__name__} ({ty}), got {data!r}")
        if ty == "LogFormat" and data not in ("pretty", "json"):
            errors.append(f"{where}: `{key}` must be `pretty` or `json`")
        return errors


_MODEL: ConfigModel | None = None


def config_model() -> ConfigModel:
    global _MODEL
    if _MODEL is None:
        _MODEL = ConfigModel(CONFIG_RS.read_text())
    return _MODEL


# ---------------------------------------------------------------------------------------
# Dockerfile


def workspace_binaries() -> dict[str, Path]:
    """Binary target name → its source file, for every workspace member."""
    root = tomllib.loads((ROOT / "Cargo.toml").read_text())
    bins: dict[str, Path] = {}
    for member in root["workspace"]["members"]:
        crate = ROOT / member
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
        package = manifest["package"]["name"]
        for b in manifest.get("bin", []):
            bins[b["name"]] = crate / b.get("path", f"src/bin/{b['name']}.rs")
        if manifest["package"].get("autobins", True):
            if (crate / "src" / "main.rs").exists():
                bins.setdefault(package, crate / "src" / "main.rs")
            for f in sorted((crate / "src" / "bin").glob("*.rs")) if (crate / "src" / "bin").is_dir() else []:
                bins.setdefault(f.stem, f)
    return bins


def cmd_dockerfile() -> int:
    p = Problems("Dockerfile")
    text = (ROOT / "Dockerfile").read_text()
    m = re.search(r'^ARG BINARIES="([^"]+)"', text, re.M)
    if not m:
        p.error('no `ARG BINARIES="…"` in the Dockerfile')
        return p.finish()
    listed = m.group(1).split()
    if sorted(listed) != sorted(IMAGE_BINARIES):
        p.error(f"BINARIES is {listed}, expected {IMAGE_BINARIES}")
    bins = workspace_binaries()
    for name in listed:
        src = bins.get(name)
        if src is None:
            p.error(f"binary `{name}`: no workspace member defines it (a [[bin]] or src/main.rs of package {name})")
        elif not src.exists():
            p.error(f"binary `{name}`: its source {src.relative_to(ROOT)} does not exist yet")
        else:
            p.ok(f"binary {name} ← {src.relative_to(ROOT)}")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    if not re.search(r"^FROM \$\{DEBIAN_IMAGE\} AS runtime$", text, re.M):
        p.error("runtime stage must be `FROM ${DEBIAN_IMAGE} AS runtime`")
    if not re.fullmatch(r"debian:[a-z]+-slim", args.get("DEBIAN_IMAGE", "")):
        p.error(f"ARG DEBIAN_IMAGE must default to an official debian:<suite>-slim image, is {args.get('DEBIAN_IMAGE')!r}")
    if not re.fullmatch(r"rust:\d+\.\d+-[a-z]+", args.get("RUST_IMAGE", "")):
        p.error(f"ARG RUST_IMAGE must default to an official rust:<version>-<suite> image, is {args.get('RUST_IMAGE')!r}")
    # Offline and builder-neutral: nothing fetched to parse the file, nothing BuildKit-only.
    if re.search(r"^#\s*syntax\s*=", text, re.M | re.I):
        p.error("no `# syntax=` line: it fetches a frontend image, which fails where no registry answers")
    if re.search(r"^(RUN|COPY|ADD)\s.*--(mount|chmod|link|parents|exclude)\b", text, re.M):
        p.error("BuildKit-only flags (--mount, --chmod, --link…) break the classic builder (docker.io without buildx)")
    if "ENTRYPOINT [\"/usr/local/bin/fwdwatch-entrypoint\"]" not in text:
        p.error("the runtime ENTRYPOINT must be /usr/local/bin/fwdwatch-entrypoint (compose secrets, demo)")
    for script in ("fwdwatch-probe", "fwdwatch-entrypoint", "fwdwatch-setup", "cargo-stub-workspace"):
        path = ROOT / "deploy" / "docker" / script
        if not path.exists() or not os.access(path, os.X_OK):
            p.error(f"deploy/docker/{script} must exist and be executable (COPY keeps the mode)")
    if f"USER {RUNTIME_UID}:{RUNTIME_UID}" not in text:
        p.error(f"runtime must run as `USER {RUNTIME_UID}:{RUNTIME_UID}` (numeric, non-root)")
    if "--locked" not in text:
        p.error("cargo must build with --locked")
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for src in line.split()[:-1]:
            if src.startswith("deploy/") and not (ROOT / src).exists():
                p.error(f"COPY source {src} does not exist")
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    if "target" not in dockerignore and "target/" not in dockerignore:
        p.error(".dockerignore must exclude target")
    if ".env" not in dockerignore:
        p.error(".dockerignore must exclude .env")
    p.ok("runtime: debian slim (ARG DEBIAN_IMAGE), numeric non-root user 10001, --locked build, COPY sources exist")
    p.ok("no `# syntax=` line and no BuildKit-only flags: builds offline with BuildKit or the classic builder")
    p.ok(".dockerignore excludes target/ and .env")
    return p.finish()


# ---------------------------------------------------------------------------------------
# docker-compose.yml


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command") or []
    return cmd if isinstance(cmd, list) else str(cmd).split()


SECRETS_MOUNT = "/var/lib/fwdwatch/secrets"
ONE_SHOT = {"setup", "first-scan"}


def _mounts(svc: dict) -> dict[str, dict]:
    return {v.get("target"): v for v in svc.get("volumes") or []}


def cmd_compose(config_json: str) -> int:
    p = Problems("docker-compose.yml (resolved with no .env and --profile observability)")
    model = config_model()
    cfg = json.loads(Path(config_json).read_text())
    services: dict = cfg.get("services", {})
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    raw_services: dict = raw.get("services", {})

    expected_profiles = {
        "setup": None, "rabbitmq": None, "redis": None, "m365-sim": None, "enumerator": None,
        "scanner": None, "notifier": None, "actioner": None, "first-scan": None,
        "otel-collector": "observability", "jaeger": "observability",
    }
    for name, profile in expected_profiles.items():
        if name not in services:
            p.error(f"service `{name}` is missing")
            continue
        profiles = services[name].get("profiles") or []
        if profile is None and profiles:
            p.error(f"service `{name}` must run without a profile (plain `docker compose up`), has {profiles}")
        if profile is not None and profiles != [profile]:
            p.error(f"service `{name}` must be in profile `{profile}` only, has {profiles}")
    p.ok("setup, RabbitMQ, Redis, simulator, the four services and first-scan start with plain `up`; collector and Jaeger under `observability`")

    image = services.get("enumerator", {}).get("image")
    fwd = {n: s for n, s in services.items() if s.get("image") == image}
    builders = [n for n, s in fwd.items() if s.get("build")]
    if builders != ["setup"]:
        p.error(f"exactly one service (setup) may build the image, found {builders} (several would build it at once)")
    for name in ("setup", "m365-sim", "first-scan", *(b.removeprefix("fwdwatch-") for b in SERVICE_BINARIES)):
        if name in services and name not in fwd:
            p.error(f"{name}: must run the fwdwatch image {image}")
    for name, svc in fwd.items():
        if str(svc.get("user", "")) != f"{RUNTIME_UID}:{RUNTIME_UID}":
            p.error(f"{name}: user must be {RUNTIME_UID}:{RUNTIME_UID}")
        if not svc.get("read_only"):
            p.error(f"{name}: read_only root filesystem expected")
        if "ALL" not in (svc.get("cap_drop") or []):
            p.error(f"{name}: cap_drop ALL expected")
        one_shot = svc.get("restart") == "no"
        if one_shot != (name in ONE_SHOT):
            p.error(f"{name}: restart \"no\" is for the one-shot services {sorted(ONE_SHOT)} only")
        hc = svc.get("healthcheck") or {}
        if not one_shot and (hc.get("disable") or not hc.get("test")):
            p.error(f"{name}: a health check is required")
        deps = svc.get("depends_on") or {}
        if name not in ("setup", "m365-sim"):
            for dep in ("rabbitmq", "redis"):
                if (deps.get(dep) or {}).get("condition") != "service_healthy":
                    p.error(f"{name}: depends_on {dep} with condition service_healthy expected")
            if (deps.get("setup") or {}).get("condition") != "service_completed_successfully":
                p.error(f"{name}: depends_on setup with condition service_completed_successfully expected")
            sim = deps.get("m365-sim") or {}
            if sim.get("condition") != "service_healthy" or sim.get("required") is not False:
                p.error(f"{name}: depends_on m365-sim healthy with required: false expected (it exits when Microsoft 365 is configured)")
        mount = _mounts(svc).get(SECRETS_MOUNT)
        if name == "setup":
            if not mount or mount.get("source") != "secrets" or mount.get("read_only"):
                p.error(f"setup: the `secrets` volume must be mounted writable at {SECRETS_MOUNT}")
        elif name != "m365-sim" and (not mount or mount.get("source") != "secrets" or not mount.get("read_only")):
            p.error(f"{name}: the `secrets` volume must be mounted read-only at {SECRETS_MOUNT}")
        for key in (svc.get("environment") or {}):
            err = model.check_env_name(key)
            if err:
                p.error(f"{name}: {err}")
    p.ok(f"fwdwatch containers {sorted(fwd)}: one image built once, uid {RUNTIME_UID}, read-only, no capabilities, "
         "health checks, start after setup and healthy RabbitMQ and Redis, secrets volume read-only, valid FWDWATCH__ keys")

    for name in SERVICE_BINARIES:
        svc_name = name.removeprefix("fwdwatch-")
        if _command(services.get(svc_name, {}))[:1] != [name]:
            p.error(f"service `{svc_name}` must run `{name}`")
    commands = {
        "setup": ["fwdwatch-setup", "secrets"],
        "m365-sim": ["fwdwatch-setup", "simulator"],
        "first-scan": ["fwdwatch-setup", "first-scan"],
    }
    for name, prefix in commands.items():
        if _command(services.get(name, {}))[:2] != prefix:
            p.error(f"service `{name}` must run `{' '.join(prefix)}`")
    sim = services.get("m365-sim", {})
    if "0.0.0.0:8365" not in _command(sim):
        p.error("m365-sim must listen on 0.0.0.0:8365")
    if sim.get("restart") != "on-failure":
        p.error("m365-sim: restart on-failure expected (its clean exit when Microsoft 365 is configured must stay an exit)")
    for name in ("enumerator", "scanner", "actioner", "first-scan", "m365-sim"):
        env = services.get(name, {}).get("environment") or {}
        if env.get("FWDWATCH_SIMULATOR_URL") != "http://m365-sim:8365":
            p.error(f"{name}: FWDWATCH_SIMULATOR_URL=http://m365-sim:8365 expected (the demo without .env)")
        for key in ("FWDWATCH__M365__LOGIN_URL", "FWDWATCH__M365__GRAPH_URL", "FWDWATCH__M365__EXO_URL",
                    "FWDWATCH__M365__CLIENT_SECRET", "FWDWATCH__M365__PARTNER_TENANT_ID"):
            if name != "m365-sim" and key not in (raw_services.get(name, {}).get("environment") or {}) \
                    and key not in env:
                p.error(f"{name}: {key} must be passed through from .env (real tenants)")
            if env.get(key) is not None:
                p.error(f"{name}: with no .env, {key} must be unset (the entrypoint picks the simulator), is {env.get(key)!r}")
    p.ok("with no .env the Microsoft 365 clients use the simulator; credentials in .env pass through; first-scan prints and scans once")

    scanner = services.get("scanner", {})
    if scanner.get("container_name"):
        p.error("scanner must not set container_name (breaks --scale)")
    if scanner.get("ports"):
        p.error("scanner must not publish ports (breaks --scale)")
    p.ok("scanner has no container_name and no published port (--scale scanner=N works)")

    allowed_ports = {"actioner", "rabbitmq", "jaeger"}
    for name, svc in services.items():
        ports = svc.get("ports") or []
        if ports and name not in allowed_ports:
            p.error(f"{name}: publishes {ports}; only the actioner (and RabbitMQ management / Jaeger UI) may")
        for port in ports:
            if port.get("host_ip") != "127.0.0.1":
                p.error(f"{name}: port {port.get('target')} must bind 127.0.0.1 by default")
    if [pt.get("target") for pt in services.get("actioner", {}).get("ports") or []] != [ACTIONER_PORT]:
        p.error(f"actioner must publish its port {ACTIONER_PORT}")
    if (services.get("actioner", {}).get("environment") or {}).get("FWDWATCH__ACTIONER__LISTEN") != f"0.0.0.0:{ACTIONER_PORT}":
        p.error(f"actioner must listen on 0.0.0.0:{ACTIONER_PORT} in its container")
    link_base = (services.get("notifier", {}).get("environment") or {}).get("FWDWATCH__NOTIFIER__LINK_BASE_URL")
    if link_base != f"http://localhost:{ACTIONER_PORT}":
        p.error(f"with no .env, links must point at the published actioner (http://localhost:{ACTIONER_PORT}), not {link_base!r}")
    p.ok("only the actioner publishes a port, on 127.0.0.1 like the RabbitMQ management and Jaeger UIs; links point at it")

    rmq, redis = services.get("rabbitmq", {}), services.get("redis", {})
    for name, svc in (("rabbitmq", rmq), ("redis", redis)):
        if str(svc.get("user", "")) in ("", "0", "root") or str(svc.get("user", "")).startswith(("0:", "root")):
            p.error(f"{name}: must run as a non-root user")
        if not svc.get("read_only"):
            p.error(f"{name}: read_only root filesystem expected")
        if "ALL" not in (svc.get("cap_drop") or []):
            p.error(f"{name}: cap_drop ALL expected")
        mount = _mounts(svc).get(SECRETS_MOUNT)
        if not mount or mount.get("source") != "secrets" or not mount.get("read_only"):
            p.error(f"{name}: the `secrets` volume must be mounted read-only at {SECRETS_MOUNT} (its password)")
        if str(RUNTIME_UID) not in [str(g) for g in svc.get("group_add") or []]:
            p.error(f"{name}: group_add {RUNTIME_UID} expected (reads the generated password)")
        if ((svc.get("depends_on") or {}).get("setup") or {}).get("condition") != "service_completed_successfully":
            p.error(f"{name}: depends_on setup (service_completed_successfully) expected")
    if "check_port_connectivity" not in json.dumps((rmq.get("healthcheck") or {}).get("test")):
        p.error("rabbitmq health check must be `rabbitmq-diagnostics -q check_port_connectivity` (ping answers before AMQP listens)")
    if not any(v.get("target") == "/var/lib/rabbitmq" for v in rmq.get("volumes") or []):
        p.error("rabbitmq needs a volume on /var/lib/rabbitmq")
    if not rmq.get("hostname"):
        p.error("rabbitmq needs a fixed hostname (its data directory follows the node name)")
    if "rabbitmq_password" not in " ".join(rmq.get("entrypoint") or []):
        p.error("rabbitmq must take its password from the generated secret")
    if "redis-cli" not in json.dumps((redis.get("healthcheck") or {}).get("test")):
        p.error("redis health check must be `redis-cli ping`")
    if "--appendonly yes" not in " ".join(_command(redis)):
        p.error("redis must run with --appendonly yes")
    if "redis_password" not in " ".join(_command(redis)):
        p.error("redis must take its password from the generated secret")
    if not any(v.get("target") == "/data" and v.get("type") == "volume" for v in redis.get("volumes") or []):
        p.error("redis needs a named volume on /data")
    p.ok("RabbitMQ and Redis: non-root, read-only, password from the secrets volume; listeners checked, fixed hostname, "
         "volume; append-only file on a named volume, redis-cli ping")

    # Secrets never written into docker-compose.yml itself: a secret-typed setting is
    # either passed through (no value) or interpolated from .env.
    for name, svc in raw_services.items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
        for key, value in env.items():
            path = model.env_path(key)
            if path and model.is_secret(path) and value is not None and "${" not in str(value):
                p.error(f"{name}: {key} is a secret but has a literal value in docker-compose.yml")
    p.ok("no secret has a literal value in docker-compose.yml")

    collector = services.get("otel-collector", {})
    if not any(str(v.get("source", "")).endswith("deploy/otel-collector.yaml") for v in collector.get("volumes") or []):
        p.error("otel-collector must mount deploy/otel-collector.yaml")
    return p.finish()


# ---------------------------------------------------------------------------------------
# .env.example


ENV_LINE = re.compile(r"^\s*(#)?\s*([A-Z][A-Z0-9_]*)=(.*)$")
INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def cmd_env_example() -> int:
    p = Problems(".env.example")
    model = config_model()
    # The simulator's published demo credentials are fine to show (they open nothing).
    sim_lib = ROOT / "sim" / "src" / "lib.rs"
    sim_defaults = set(re.findall(r'pub const DEFAULT_\w+: &str = "([^"]+)";', sim_lib.read_text())) if sim_lib.exists() else set()
    documented: dict[str, tuple[bool, str]] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = ENV_LINE.match(line)
        if m:
            documented[m.group(2)] = (m.group(1) is None, m.group(3))
    compose_text = (ROOT / "docker-compose.yml").read_text()
    raw = yaml.safe_load(compose_text)
    referenced = set(INTERP.findall(compose_text.replace("$$", "")))
    passed: set[str] = set()
    for svc in (raw.get("services") or {}).values():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if key.startswith("FWDWATCH__"):
                passed.add(key)
            if value is None:
                referenced.add(key)
    # Every variable compose interpolates or passes through is documented (set, or as a
    # commented `#NAME=example` line).
    for var in sorted(referenced):
        if var not in documented:
            p.error(f"{var} is used by docker-compose.yml but not documented in .env.example")
    p.ok(f"all {len(referenced)} variables docker-compose.yml reads are documented")
    for var, (active, value) in documented.items():
        if var.startswith("FWDWATCH__"):
            err = model.check_env_name(var)
            if err:
                p.error(err)
            elif var not in passed:
                p.error(f"{var} is documented but no service in docker-compose.yml receives it")
            path = model.env_path(var)
            secret = path is not None and model.is_secret(path)
        else:
            secret = any(w in var for w in ("PASSWORD", "SECRET", "TOKEN"))
        placeholder = value in sim_defaults or any(
            mark in value.lower() for mark in ("change-me", "example.com", "fake")
        )
        if secret and value and not placeholder:
            p.error(f"{var}: example secrets must be obvious placeholders (`change-me`, example.com)")
    p.ok("every FWDWATCH__ variable is a real config key that some service receives")
    p.ok("every secret in the example (set or commented) is a placeholder or the simulator's demo value")
    return p.finish()


# ---------------------------------------------------------------------------------------
# OpenTelemetry collector


# Components of the core collector distribution (otel/opentelemetry-collector) that this
# project may use. Anything else needs the contrib image.
CORE_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter"},
    "exporters": {"otlp", "otlphttp", "debug", "nop"},
    "extensions": {"zpages"},
    "connectors": {"forward"},
}


def cmd_otel() -> int:
    p = Problems("deploy/otel-collector.yaml (hand-written structural check)")
    cfg = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    defined: dict[str, set[str]] = {}
    for kind, allowed in CORE_COMPONENTS.items():
        defined[kind] = set((cfg.get(kind) or {}).keys())
        for cid in defined[kind]:
            if cid.split("/", 1)[0] not in allowed:
                p.error(f"{kind}.{cid}: not a core-distribution component ({sorted(allowed)})")
    pipelines = ((cfg.get("service") or {}).get("pipelines")) or {}
    if "traces" not in pipelines:
        p.error("no traces pipeline")
    for name, pipe in pipelines.items():
        if name.split("/", 1)[0] not in ("traces", "metrics", "logs"):
            p.error(f"pipeline {name}: unknown signal")
        for kind in ("receivers", "processors", "exporters"):
            for cid in pipe.get(kind) or []:
                if cid not in defined[kind]:
                    p.error(f"pipeline {name}: {kind[:-1]} {cid} is not defined")
        if not pipe.get("receivers") or not pipe.get("exporters"):
            p.error(f"pipeline {name}: needs receivers and exporters")
    otlp_http = (((cfg.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("http") or {}
    if not str(otlp_http.get("endpoint", "")).endswith(":4318"):
        p.error("the OTLP receiver must take HTTP on :4318 (telemetry.otlp_endpoint)")
    p.ok(f"pipelines {sorted(pipelines)} reference defined core components; OTLP/HTTP on 4318")
    return p.finish()


# ---------------------------------------------------------------------------------------
# Kustomize sources


def cmd_kustomize_files() -> int:
    p = Problems("kustomization files")
    k8s = ROOT / "deploy" / "k8s"
    kfiles = sorted(k8s.rglob("kustomization.yaml"))
    if not kfiles:
        p.error("no kustomization.yaml under deploy/k8s")
    for kfile in kfiles:
        base = kfile.parent
        rel = kfile.relative_to(ROOT)
        k = yaml.safe_load(kfile.read_text())
        named: list[str] = []
        named += k.get("resources") or []
        named += k.get("components") or []
        named += k.get("configurations") or []
        for patch in k.get("patches") or []:
            if isinstance(patch, dict) and "path" in patch:
                named.append(patch["path"])
        named += k.get("patchesStrategicMerge") or []
        for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
            for f in gen.get("files") or []:
                named.append(f.split("=", 1)[-1])
            named += gen.get("envs") or []
        for entry in named:
            target = (base / entry).resolve()
            if not target.exists():
                p.error(f"{rel}: names {entry}, which does not exist")
                continue
            if target.is_dir():
                if not (target / "kustomization.yaml").exists():
                    p.error(f"{rel}: directory {entry} has no kustomization.yaml")
                continue
            try:
                if target.suffix in (".yaml", ".yml"):
                    docs = [d for d in yaml.safe_load_all(target.read_text()) if d is not None]
                    if not docs:
                        p.error(f"{rel}: {entry} holds no document")
                    for d in docs:
                        if not isinstance(d, dict):
                            p.error(f"{rel}: {entry} holds a non-mapping document")
                elif target.suffix == ".toml":
                    for err in config_model().check_toml(tomllib.loads(target.read_text()), str(target.relative_to(ROOT))):
                        p.error(err)
                elif target.suffix == ".env":
                    for n, line in enumerate(target.read_text().splitlines(), 1):
                        if line.strip() and not line.startswith("#") and "=" not in line:
                            p.error(f"{entry}:{n}: not KEY=VALUE")
            except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
                p.error(f"{rel}: {entry} does not parse: {e}")
        p.ok(f"{rel}: {len(named)} named files exist and parse (TOML against config.rs keys)")
    return p.finish()


# ---------------------------------------------------------------------------------------
# Kubernetes build output


def _labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def cmd_k8s(name: str, built: str, out_dir: str) -> int:
    import jsonschema  # noqa: PLC0415 (only this subcommand needs it)

    p = Problems(f"kubernetes {name} (kustomize build output)")
    model = config_model()
    docs = [d for d in yaml.safe_load_all(Path(built).read_text()) if d]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    core = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
    keda = [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}-core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))
    p.ok(f"{len(docs)} resources: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items())))

    # KEDA resources against the bundled (hand-written) schemas.
    schemas = {
        "ScaledObject": json.loads((ROOT / "deploy/schemas/keda-scaledobject.schema.json").read_text()),
        "TriggerAuthentication": json.loads((ROOT / "deploy/schemas/keda-triggerauthentication.schema.json").read_text()),
    }
    for d in keda:
        schema = schemas.get(d["kind"])
        if schema is None:
            p.error(f"{d['kind']} {d['metadata']['name']}: no schema in deploy/schemas")
            continue
        validator = jsonschema.Draft202012Validator(schema)
        errs = sorted(validator.iter_errors(d), key=lambda e: list(e.path))
        for e in errs:
            p.error(f"{d['kind']} {d['metadata']['name']}: /{'/'.join(map(str, e.path))}: {e.message}")
        if not errs:
            p.ok(f"{d['kind']} {d['metadata']['name']} matches deploy/schemas (hand-written KEDA schema)")

    # Namespace: one, declared, used by every namespaced resource.
    namespaces = [d["metadata"]["name"] for d in by_kind.get("Namespace", [])]
    if len(namespaces) != 1:
        p.error(f"exactly one Namespace expected, found {namespaces}")
    ns = namespaces[0] if namespaces else None
    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != ns:
            p.error(f"{d['kind']} {d['metadata']['name']}: namespace {d['metadata'].get('namespace')!r}, expected {ns!r}")

    # Configuration file(s).
    prefetch, amqp_ns = 16, "fwdwatch"
    for cm in by_kind.get("ConfigMap", []):
        if not cm["metadata"]["name"].startswith("fwdwatch-config"):
            continue
        text = (cm.get("data") or {}).get("fwdwatch.toml")
        if text is None:
            p.error(f"ConfigMap {cm['metadata']['name']}: no fwdwatch.toml")
            continue
        toml = tomllib.loads(text)
        for err in model.check_toml(toml, f"ConfigMap {cm['metadata']['name']}"):
            p.error(err)
        prefetch = toml.get("amqp", {}).get("prefetch", prefetch)
        amqp_ns = toml.get("amqp", {}).get("namespace", amqp_ns)
        listen = toml.get("actioner", {}).get("listen", "")
        if listen != f"0.0.0.0:{ACTIONER_PORT}":
            p.error(f"fwdwatch.toml: actioner.listen must be 0.0.0.0:{ACTIONER_PORT} in a pod, is {listen!r}")
        if toml.get("telemetry", {}).get("metrics_listen") != f"0.0.0.0:{METRICS_PORT}":
            p.error(f"fwdwatch.toml: telemetry.metrics_listen must be 0.0.0.0:{METRICS_PORT} (probes)")
        if toml.get("telemetry", {}).get("log_format") != "json":
            p.error("fwdwatch.toml: telemetry.log_format must be json in containers")
        p.ok(f"ConfigMap {cm['metadata']['name']}: fwdwatch.toml keys exist in config.rs; listen addresses and JSON logs set")

    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}

    # Deployments.
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    expected = {f"fwdwatch-{s}" for s in ("enumerator", "scanner", "notifier", "actioner")}
    if set(deployments) != expected:
        p.error(f"Deployments {sorted(deployments)}, expected {sorted(expected)}")
    for dname, dep in sorted(deployments.items()):
        spec = dep["spec"]
        tmpl = spec["template"]
        pod = tmpl["spec"]
        where = f"Deployment {dname}"
        if tmpl["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "fwdwatch":
            p.error(f"{where}: pods need label app.kubernetes.io/part-of=fwdwatch (network policy)")
        psc = pod.get("securityContext") or {}
        if not psc.get("runAsNonRoot") or psc.get("runAsUser") != RUNTIME_UID:
            p.error(f"{where}: pod securityContext runAsNonRoot and runAsUser {RUNTIME_UID} expected")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            p.error(f"{where}: seccompProfile RuntimeDefault expected")
        if pod.get("automountServiceAccountToken") is not False:
            p.error(f"{where}: automountServiceAccountToken: false expected")
        if not isinstance(pod.get("terminationGracePeriodSeconds"), int):
            p.error(f"{where}: terminationGracePeriodSeconds expected")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            if (c.get("command") or [None])[0] not in SERVICE_BINARIES:
                p.error(f"{cw}: command must start with one of {SERVICE_BINARIES}")
            csc = c.get("securityContext") or {}
            if csc.get("readOnlyRootFilesystem") is not True:
                p.error(f"{cw}: readOnlyRootFilesystem: true expected")
            if csc.get("allowPrivilegeEscalation") is not False:
                p.error(f"{cw}: allowPrivilegeEscalation: false expected")
            if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
                p.error(f"{cw}: capabilities drop [ALL] expected")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        p.error(f"{cw}: resources.{part}.{r} expected")
            ports = {pt.get("name"): pt["containerPort"] for pt in c.get("ports") or []}
            for probe in ("livenessProbe", "readinessProbe"):
                hg = (c.get(probe) or {}).get("httpGet")
                if not hg:
                    p.error(f"{cw}: {probe} with httpGet expected")
                    continue
                port = ports.get(hg["port"], hg["port"])
                want = ACTIONER_PORT if dname == "fwdwatch-actioner" else METRICS_PORT
                if port != want:
                    p.error(f"{cw}: {probe} must probe port {want}, probes {hg['port']}")
                if hg.get("path") not in ("/healthz", "/readyz"):
                    p.error(f"{cw}: {probe} path must be /healthz or /readyz")
            env = {e["name"]: e for e in c.get("env") or []}
            if (env.get("FWDWATCH_CONFIG") or {}).get("value") != "/etc/fwdwatch/fwdwatch.toml":
                p.error(f"{cw}: FWDWATCH_CONFIG=/etc/fwdwatch/fwdwatch.toml expected")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
            cfg_mount = mounts.get("/etc/fwdwatch")
            if not cfg_mount or "configMap" not in volumes.get(cfg_mount["name"], {}):
                p.error(f"{cw}: the config ConfigMap must be mounted at /etc/fwdwatch")
            elif not any(cm["metadata"]["name"] == volumes[cfg_mount["name"]]["configMap"]["name"] for cm in by_kind.get("ConfigMap", [])):
                p.error(f"{cw}: mounts ConfigMap {volumes[cfg_mount['name']]['configMap']['name']}, which the build does not contain")
            for ename, e in env.items():
                err = model.check_env_name(ename)
                if err:
                    p.error(f"{cw}: {err}")
                path = model.env_path(ename)
                if path and model.is_secret(path) and "value" in e:
                    p.error(f"{cw}: {ename} is a secret and must come from a secretKeyRef")
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and secrets:
                    sec = secrets.get(ref["name"])
                    if sec is None:
                        p.error(f"{cw}: {ename} refers to Secret {ref['name']}, not in the build")
                    elif not ref.get("optional") and ref["key"] not in {**(sec.get("data") or {}), **(sec.get("stringData") or {})}:
                        p.error(f"{cw}: {ename} needs key {ref['key']} in Secret {ref['name']}")
        if dname == "fwdwatch-scanner":
            if "replicas" in spec:
                p.error(f"{where}: must not set replicas (KEDA's HPA owns them)")
            if pod.get("terminationGracePeriodSeconds", 0) < MIN_SCANNER_GRACE_S:
                p.error(f"{where}: terminationGracePeriodSeconds ≥ {MIN_SCANNER_GRACE_S} expected")
        if dname == "fwdwatch-enumerator" and (spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate"):
            p.error(f"{where}: one replica with strategy Recreate expected (one scheduler)")
    p.ok("Deployments: non-root uid 10001, read-only root, no capabilities, seccomp, requests+limits, "
         "liveness+readiness on the health ports, config mounted, secrets only through secretKeyRef")

    # Service (and Ingress) for the actioner.
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    act = deployments.get("fwdwatch-actioner")
    svc = services.get("fwdwatch-actioner")
    if not svc:
        p.error("Service fwdwatch-actioner missing")
    elif act:
        if not _labels_match(svc["spec"].get("selector"), act["spec"]["template"]["metadata"]["labels"]):
            p.error("Service fwdwatch-actioner does not select the actioner pods")
        cports = {pt.get("name"): pt["containerPort"] for pt in act["spec"]["template"]["spec"]["containers"][0].get("ports") or []}
        for sp in svc["spec"]["ports"]:
            if cports.get(sp["targetPort"], sp["targetPort"]) != ACTIONER_PORT:
                p.error(f"Service fwdwatch-actioner port {sp['port']} must target {ACTIONER_PORT}")
    if set(services) - {"fwdwatch-actioner"}:
        p.error(f"only the actioner has a Service, found {sorted(services)}")
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                backend = path["backend"]["service"]
                target = services.get(backend["name"])
                if target is None:
                    p.error(f"Ingress {ing['metadata']['name']}: backend Service {backend['name']} not in the build")
                elif backend["port"].get("name") and backend["port"]["name"] not in [sp.get("name") for sp in target["spec"]["ports"]]:
                    p.error(f"Ingress {ing['metadata']['name']}: Service {backend['name']} has no port {backend['port']['name']}")
    # Routes whose URL path carries a secret (signed links, one-time console sign-in
    # links) must not be written to the ingress controller's access log.
    for ing in by_kind.get("Ingress", []):
        logs_off = (ing["metadata"].get("annotations") or {}).get(
            "nginx.ingress.kubernetes.io/enable-access-log") == "false"
        for rule in ing["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                if path.get("path", "").startswith(("/act", "/console")) and not logs_off:
                    p.error(f"Ingress {ing['metadata']['name']}: {path['path']} carries tokens in the "
                            "path; its Ingress must set nginx.ingress.kubernetes.io/enable-access-log: \"false\"")
    p.ok("Service fwdwatch-actioner selects the actioner and targets 8080; Ingress backends exist; "
         "token-bearing paths (/act, /console) are kept out of access logs")

    # Disruption budgets.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    for dname in ("fwdwatch-scanner", "fwdwatch-actioner"):
        dep = deployments.get(dname)
        if dep and not any(_labels_match(pdb["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"]) for pdb in pdbs):
            p.error(f"no PodDisruptionBudget selects {dname}")
    p.ok("PodDisruptionBudgets cover the scanner and the actioner")

    # Network policy: default deny for fwdwatch pods, only the actioner's HTTP port open
    # (plus metrics scraping).
    policies = by_kind.get("NetworkPolicy", [])
    if not any(
        np["spec"].get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/part-of": "fwdwatch"}
        and "Ingress" in np["spec"].get("policyTypes", []) and not np["spec"].get("ingress")
        for np in policies
    ):
        p.error("no default-deny ingress NetworkPolicy for app.kubernetes.io/part-of=fwdwatch pods")
    for np in policies:
        selector = np["spec"].get("podSelector", {}).get("matchLabels") or {}
        for rule in np["spec"].get("ingress") or []:
            ports = [pt.get("port") for pt in rule.get("ports") or []]
            if not ports:
                p.error(f"NetworkPolicy {np['metadata']['name']}: an ingress rule without ports opens every port")
            for dname, dep in deployments.items():
                if not _labels_match(selector, dep["spec"]["template"]["metadata"]["labels"]):
                    continue
                for port in ports:
                    if port != METRICS_PORT and dname != "fwdwatch-actioner":
                        p.error(f"NetworkPolicy {np['metadata']['name']}: opens port {port} on {dname}; only the actioner takes traffic")
                    if port not in (METRICS_PORT, ACTIONER_PORT, "http", "metrics"):
                        p.error(f"NetworkPolicy {np['metadata']['name']}: unexpected port {port}")
    p.ok("NetworkPolicy: default-deny ingress; only the actioner's 8080 (and metrics 9464) allowed")

    # KEDA: scanner autoscaling on the scan-jobs queue.
    auths = {a["metadata"]["name"]: a for a in by_kind.get("TriggerAuthentication", [])}
    sos = by_kind.get("ScaledObject", [])
    if len(sos) != 1:
        p.error(f"one ScaledObject expected, found {len(sos)}")
    for so in sos:
        spec = so["spec"]
        w = f"ScaledObject {so['metadata']['name']}"
        if spec["scaleTargetRef"]["name"] != "fwdwatch-scanner" or "fwdwatch-scanner" not in deployments:
            p.error(f"{w}: must target Deployment fwdwatch-scanner")
        if spec.get("minReplicaCount", 0) < 1:
            p.error(f"{w}: minReplicaCount ≥ 1 expected (no cold starts)")
        if spec.get("maxReplicaCount", 100) < spec.get("minReplicaCount", 0):
            p.error(f"{w}: maxReplicaCount < minReplicaCount")
        behavior = (((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")) or {}
        window = (behavior.get("scaleDown") or {}).get("stabilizationWindowSeconds", 0)
        if window < MIN_SCALE_DOWN_STABILIZATION_S:
            p.error(f"{w}: scaleDown.stabilizationWindowSeconds ≥ {MIN_SCALE_DOWN_STABILIZATION_S} expected, is {window}")
        for trig in spec["triggers"]:
            md = trig.get("metadata") or {}
            if trig["type"] != "rabbitmq":
                p.error(f"{w}: trigger type {trig['type']}, expected rabbitmq")
                continue
            if md.get("protocol") != "http":
                p.error(f"{w}: protocol must be http (the management API counts unacked messages)")
            if md.get("mode") != "QueueLength":
                p.error(f"{w}: mode must be QueueLength")
            if md.get("queueName") != f"{amqp_ns}.scan.jobs":
                p.error(f"{w}: queueName must be {amqp_ns}.scan.jobs")
            if md.get("value") != str(2 * prefetch):
                p.error(f"{w}: value must be 2 × amqp.prefetch = {2 * prefetch}, is {md.get('value')}")
            if "host" in md:
                p.error(f"{w}: the host (with credentials) belongs in the TriggerAuthentication's Secret")
            ref = (trig.get("authenticationRef") or {}).get("name")
            auth = auths.get(ref)
            if auth is None:
                p.error(f"{w}: authenticationRef {ref} is not in the build")
                continue
            for t in auth["spec"].get("secretTargetRef") or []:
                sec = secrets.get(t["name"])
                if secrets and sec is None:
                    p.error(f"TriggerAuthentication {ref}: Secret {t['name']} not in the build")
                elif sec is not None and t["key"] not in (sec.get("data") or {}):
                    p.error(f"TriggerAuthentication {ref}: Secret {t['name']} has no key {t['key']}")
            if not any(t["parameter"] == "host" for t in auth["spec"].get("secretTargetRef") or []):
                p.error(f"TriggerAuthentication {ref}: must provide `host` from a Secret")
        p.ok(f"{w}: rabbitmq QueueLength over http on {amqp_ns}.scan.jobs, value {2 * prefetch} = 2 × prefetch, "
             f"min ≥ 1, scale-down window {window}s, credentials from a Secret")
    return p.finish()


# ---------------------------------------------------------------------------------------
# The compose health probe


def cmd_probe() -> int:
    p = Problems("deploy/docker/fwdwatch-probe")
    probe = str(ROOT / "deploy" / "docker" / "fwdwatch-probe")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args):
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), Handler) as server:
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        cases = [
            (["http", str(port), "/healthz"], 0, "2xx is healthy"),
            (["http", str(port), "/readyz"], 1, "503 is unhealthy"),
            (["tcp", str(port)], 0, "tcp connect"),
            (["http", "notaport"], 2, "usage error"),
        ]
        for args, want, what in cases:
            rc = subprocess.run(["bash", probe, *args], capture_output=True, timeout=20).returncode
            if rc != want:
                p.error(f"fwdwatch-probe {' '.join(args)}: exit {rc}, expected {want} ({what})")
        server.shutdown()
    with socketserver.TCPServer(("127.0.0.1", 0), Handler) as closed:
        free_port = closed.server_address[1]
    rc = subprocess.run(["bash", probe, "http", str(free_port)], capture_output=True, timeout=20).returncode
    if rc != 1:
        p.error(f"fwdwatch-probe on a closed port: exit {rc}, expected 1")
    p.ok("http 2xx → 0, http 503 → 1, tcp → 0, closed port → 1, bad usage → 2")
    return p.finish()


# ---------------------------------------------------------------------------------------
# Base images: official defaults ↔ local stand-ins


def _default(text: str, var: str) -> str | None:
    m = re.search(r"\$\{" + var + r":-([^}]+)\}", text)
    return m.group(1) if m else None


def cmd_images() -> int:
    p = Problems("base images (Dockerfile, compose files, deploy/local-images.sh)")
    script = (ROOT / "deploy" / "local-images.sh").read_text()
    official = dict(re.findall(r"^OFFICIAL_(\w+)=(\S+)$", script, re.M))
    dockerfile = dict(re.findall(r"^ARG (\w+)=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M))
    compose = (ROOT / "docker-compose.yml").read_text()
    smoke = (ROOT / "deploy" / "smoke" / "compose.smoke.yml").read_text()
    pairs = [
        ("DEBIAN", "Dockerfile ARG DEBIAN_IMAGE", dockerfile.get("DEBIAN_IMAGE")),
        ("RUST", "Dockerfile ARG RUST_IMAGE", dockerfile.get("RUST_IMAGE")),
        ("RABBITMQ", "docker-compose.yml RABBITMQ_IMAGE", _default(compose, "RABBITMQ_IMAGE")),
        ("REDIS", "docker-compose.yml REDIS_IMAGE", _default(compose, "REDIS_IMAGE")),
        ("PYTHON", "deploy/smoke/compose.smoke.yml PYTHON_IMAGE", _default(smoke, "PYTHON_IMAGE")),
    ]
    for key, where, value in pairs:
        if official.get(key) != value:
            p.error(f"{where} defaults to {value!r}, deploy/local-images.sh OFFICIAL_{key} is {official.get(key)!r}")
    p.ok("deploy/local-images.sh stands in for exactly the images the Dockerfile and compose files default to")
    for dockerfile_path in sorted((ROOT / "deploy" / "images").glob("*/Dockerfile")):
        text = dockerfile_path.read_text()
        rel = dockerfile_path.relative_to(ROOT)
        if not re.search(r"^ARG (BASE|ROOTFS)_IMAGE=fwdwatch-local/", text, re.M):
            p.error(f"{rel}: must build on a local image (ARG BASE_IMAGE=fwdwatch-local/…)")
        if re.search(r"^#\s*syntax\s*=|--mount|--chmod", text, re.M):
            p.error(f"{rel}: must build with the classic builder too (no `# syntax=`, --mount, --chmod)")
    p.ok("deploy/images/*/Dockerfile build on the local Debian image, with any builder")
    sim = (ROOT / "sim" / "src" / "lib.rs").read_text()
    entry = (ROOT / "deploy" / "docker" / "fwdwatch-entrypoint").read_text()
    for const, var in (("PARTNER_TENANT_ID", "SIM_PARTNER_TENANT_ID"), ("CLIENT_ID", "SIM_CLIENT_ID"),
                       ("CLIENT_SECRET", "SIM_CLIENT_SECRET")):
        m = re.search(rf'pub const DEFAULT_{const}: &str = "([^"]+)";', sim)
        e = re.search(rf"^readonly {var}=(\S+)$", entry, re.M)
        if not m or not e or m.group(1) != e.group(1):
            p.error(f"fwdwatch-entrypoint {var} must equal sim/src/lib.rs DEFAULT_{const}")
    p.ok("the entrypoint's demo identity is the simulator's (sim/src/lib.rs DEFAULT_*)")
    return p.finish()


# ---------------------------------------------------------------------------------------
# The image's scripts, run here against temporary directories


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(args, env={**base, **env}, capture_output=True, text=True, timeout=60, cwd=cwd)


def _env_of(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def cmd_scripts() -> int:
    import stat  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    p = Problems("image scripts (deploy/docker/fwdwatch-setup, fwdwatch-entrypoint, cargo-stub-workspace)")
    docker = ROOT / "deploy" / "docker"
    setup, entry = str(docker / "fwdwatch-setup"), str(docker / "fwdwatch-entrypoint")
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp) / "secrets"
        secrets.mkdir()
        env = {"FWDWATCH_SECRETS_DIR": str(secrets), "RABBITMQ_USER": "fwd"}
        first = _run(["bash", setup, "secrets"], env)
        files = {f.name: f for f in secrets.iterdir()}
        link = files.get("FWDWATCH__SECURITY__LINK_SECRET")
        if first.returncode != 0 or "first start: generated" not in first.stdout or link is None:
            p.error(f"fwdwatch-setup secrets (first start): exit {first.returncode}: {first.stdout}{first.stderr}")
        else:
            values = {n: f.read_text() for n, f in files.items()}
            for name in ("rabbitmq_password", "redis_password", "FWDWATCH__SECURITY__LINK_SECRET"):
                if not re.fullmatch(r"[0-9a-f]{64}", values.get(name, "")):
                    p.error(f"generated {name} is not 64 random hex digits")
            if values["FWDWATCH__AMQP__URL"] != f"amqp://fwd:{values['rabbitmq_password']}@rabbitmq:5672/%2f":
                p.error("FWDWATCH__AMQP__URL does not carry RABBITMQ_USER and the generated password")
            if values["FWDWATCH__REDIS__URL"] != f"redis://:{values['redis_password']}@redis:6379/0":
                p.error("FWDWATCH__REDIS__URL does not carry the generated password")
            modes = {n: stat.S_IMODE(f.stat().st_mode) for n, f in files.items()}
            if any(m != 0o440 for m in modes.values()):
                p.error(f"secret files must be mode 0440 (owner and group read), are {modes}")
            if any(v in first.stdout + first.stderr for v in values.values()):
                p.error("fwdwatch-setup printed a secret")
            second = _run(["bash", setup, "secrets"], env)
            again = {f.name: f.read_text() for f in secrets.iterdir()}
            if second.returncode != 0 or again != values or "using the ones generated" not in second.stdout:
                p.error("fwdwatch-setup secrets (second start) must keep every value")
            # Another installation gets other secrets: nothing is a fixed default.
            other = Path(tmp) / "other"
            other.mkdir()
            _run(["bash", setup, "secrets"], {"FWDWATCH_SECRETS_DIR": str(other)})
            if (other / "FWDWATCH__SECURITY__LINK_SECRET").read_text() == values["FWDWATCH__SECURITY__LINK_SECRET"]:
                p.error("two installs got the same link secret")
        bad = _run(["bash", setup, "secrets"], {**env, "RABBITMQ_USER": "a b@c"})
        if bad.returncode == 0:
            p.error("fwdwatch-setup secrets accepted a RABBITMQ_USER that breaks the URL")
        p.ok("secrets: generated once (64 hex digits, mode 0440, never printed), kept on the next start, "
             "different per install; broker and store URLs derived")

        # The entrypoint: secrets from files unless set; the demo unless Microsoft 365 is configured.
        (secrets / "FWDWATCH__BAD NAME").write_text("x")
        sim = {"FWDWATCH_SIMULATOR_URL": "http://m365-sim:8365"}
        demo = _env_of(_run(["bash", entry, "env"], {**env, **sim}).stdout)
        if demo.get("FWDWATCH__AMQP__URL") != (secrets / "FWDWATCH__AMQP__URL").read_text():
            p.error("the entrypoint does not load FWDWATCH__AMQP__URL from the secrets volume")
        if any(" " in k for k in demo):
            p.error("the entrypoint exported a malformed file name")
        if demo.get("FWDWATCH__M365__LOGIN_URL") != "http://m365-sim:8365" or demo.get("FWDWATCH_M365_TARGET") != "simulator" \
                or not demo.get("FWDWATCH__M365__CLIENT_SECRET"):
            p.error("with nothing Microsoft 365 configured, the entrypoint must select the simulator")
        if "FWDWATCH_SIMULATOR_URL" in demo:
            p.error("the entrypoint must not pass FWDWATCH_SIMULATOR_URL on")
        real = _env_of(_run(["bash", entry, "env"], {**env, **sim, "FWDWATCH__M365__CLIENT_SECRET": "s",
                                                      "FWDWATCH__SECURITY__LINK_SECRET": "from-env-0123456789"}).stdout)
        if "FWDWATCH__M365__LOGIN_URL" in real or real.get("FWDWATCH_M365_TARGET") != "configured":
            p.error("with a Microsoft 365 credential set, the entrypoint must leave the URLs to the configuration")
        if real.get("FWDWATCH__SECURITY__LINK_SECRET") != "from-env-0123456789":
            p.error("a value from .env must win over the generated one")
        half = _env_of(_run(["bash", entry, "env"], {**env, **sim, "FWDWATCH__M365__CLIENT_ID": "x"}).stdout)
        if half.get("FWDWATCH_M365_TARGET") != "configured" or "FWDWATCH__M365__CLIENT_SECRET" in half:
            p.error("a partly configured Microsoft 365 must not silently fall back to the simulator")
        plain = _env_of(_run(["bash", entry, "env"], env).stdout)
        if "FWDWATCH__M365__LOGIN_URL" in plain or "FWDWATCH_M365_TARGET" in plain:
            p.error("without FWDWATCH_SIMULATOR_URL the entrypoint must not touch Microsoft 365 settings")
        p.ok("entrypoint: secrets from the volume unless .env sets them; simulator only when nothing Microsoft 365 is configured")

        fake = Path(tmp) / "bin"
        fake.mkdir()
        (fake / "m365-sim").write_text("#!/bin/sh\necho \"m365-sim $*\"\n")
        (fake / "m365-sim").chmod(0o755)
        path = f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        started = _run(["bash", setup, "simulator", "--listen", "0.0.0.0:8365"], {"PATH": path, "FWDWATCH_M365_TARGET": "simulator"})
        skipped = _run(["bash", setup, "simulator", "--listen", "0.0.0.0:8365"], {"PATH": path, "FWDWATCH_M365_TARGET": "configured"})
        if "m365-sim --listen 0.0.0.0:8365" not in started.stdout:
            p.error("fwdwatch-setup simulator must run m365-sim with its arguments in the demo")
        if skipped.returncode != 0 or "m365-sim" in skipped.stdout.replace("simulator is not started", ""):
            p.error("fwdwatch-setup simulator must exit 0 without starting it when Microsoft 365 is configured")
        p.ok("simulator: started in the demo, a clean exit when Microsoft 365 is configured")

        # The dependency layer's recipe: a workspace Cargo reads like the real one.
        recipe = Path(tmp) / "recipe"
        recipe.mkdir()
        made = _run(["sh", str(docker / "cargo-stub-workspace"), str(ROOT), str(recipe)], {})
        if made.returncode != 0:
            p.error(f"cargo-stub-workspace failed: {made.stderr}")
        elif shutil_which("cargo"):
            def targets(manifest: Path) -> set[tuple[str, str]]:
                out = _run(["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline",
                            "--manifest-path", str(manifest)], {"HOME": os.environ.get("HOME", "/root"),
                                                                 "CARGO_HOME": os.environ.get("CARGO_HOME", "")})
                if out.returncode != 0:
                    p.error(f"cargo metadata {manifest}: {out.stderr.strip()[:300]}")
                    return set()
                meta = json.loads(out.stdout)
                return {(pkg["name"], t["name"]) for pkg in meta["packages"] for t in pkg["targets"]}
            real_targets, stub_targets = targets(ROOT / "Cargo.toml"), targets(recipe / "Cargo.toml")
            if real_targets != stub_targets:
                p.error(f"the stub workspace's targets differ: {sorted(real_targets ^ stub_targets)}")
            else:
                p.ok(f"cargo-stub-workspace: Cargo reads the stub workspace with the same {len(real_targets)} targets")
        else:
            p.ok("cargo-stub-workspace ran (no cargo here to compare targets)")
    return p.finish()


def shutil_which(name: str) -> str | None:
    import shutil  # noqa: PLC0415

    return shutil.which(name)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    table = {
        "dockerfile": cmd_dockerfile,
        "compose": cmd_compose,
        "env-example": cmd_env_example,
        "otel": cmd_otel,
        "kustomize-files": cmd_kustomize_files,
        "k8s": cmd_k8s,
        "probe": cmd_probe,
        "images": cmd_images,
        "scripts": cmd_scripts,
    }
    if cmd not in table:
        print(f"unknown subcommand {cmd}\n{__doc__}", file=sys.stderr)
        return 2
    return table[cmd](*args)


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
