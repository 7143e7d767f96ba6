"""Local production mode: PostgreSQL 15, the gRPC code server for ``roadwork_assets.definitions``,
``dagster-daemon run``, ``dagster-webserver`` and a ``--read-only`` webserver, on this machine.

    python -m roadwork_assets.platform up [--home DIR]      # or: make serve-platform
    python -m roadwork_assets.platform status [--home DIR]
    python -m roadwork_assets.platform down [--home DIR]

Everything lives under the instance directory (default ``./platform_home``, or
$ROADWORK_PLATFORM_HOME): ``pgdata/`` (initdb), ``dagster.yaml`` (copied from
``deploy/dagster.yaml``), ``workspace.yaml`` (the code server's address), ``artifacts/``,
``mlartifacts/`` and ``platform/`` (state, logs, the generated database password, mode 0600).
Every server listens on 127.0.0.1. PostgreSQL refuses to run as root, so under root its
commands run as the ``postgres`` system user (or a ``roadwork-pg`` user created for it).
"""

import argparse
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEPLOY_INSTANCE_YAML = REPO / "deploy" / "dagster.yaml"
PG_BIN = Path(os.environ.get("ROADWORK_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_SUPERUSER = "roadwork"
DAGSTER_DB = "dagster"
MLFLOW_DB = "mlflow"
LOCATION = "roadwork"
SERVICES = ("code_server", "daemon", "webserver", "webserver_ro")
START_TIMEOUT_S = 240.0  # the code server imports torch and the whole graph; the machine is shared


@dataclass
class Ports:
    """Loopback ports; 0 picks a free one at ``up``."""

    postgres: int = int(os.environ.get("ROADWORK_PLATFORM_PG_PORT", "15432"))
    grpc: int = int(os.environ.get("ROADWORK_PLATFORM_GRPC_PORT", "4266"))
    webserver: int = int(os.environ.get("ROADWORK_PLATFORM_WEB_PORT", "3000"))
    webserver_ro: int = int(os.environ.get("ROADWORK_PLATFORM_WEB_RO_PORT", "3001"))


@dataclass
class State:
    ports: Ports
    pg_user: str | None = None
    pids: dict[str, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own exited child) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"{what} not ready within {timeout_s:.0f} s")


class Platform:
    """The local production services of one instance directory."""

    def __init__(self, home: str | Path, ports: Ports | None = None):
        self.home = Path(home).resolve()
        self.dir = self.home / "platform"
        self.logs = self.dir / "logs"
        self.pgdata = self.home / "pgdata"
        self.state_file = self.dir / "state.json"
        saved = self._load_state()
        self.state = saved if saved is not None and ports is None else State(ports=ports or Ports())

    # -- state ----------------------------------------------------------------------------
    def _load_state(self) -> State | None:
        if not self.state_file.exists():
            return None
        raw = json.loads(self.state_file.read_text())
        return State(ports=Ports(**raw["ports"]), pg_user=raw.get("pg_user"), pids=raw.get("pids", {}))

    def _save_state(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=1))
        os.replace(tmp, self.state_file)

    @property
    def ports(self) -> Ports:
        return self.state.ports

    def password(self) -> str:
        """The database password: $DAGSTER_PG_PASSWORD, else one generated once per instance."""
        if os.environ.get("DAGSTER_PG_PASSWORD"):
            return os.environ["DAGSTER_PG_PASSWORD"]
        path = self.dir / "secrets" / "pg_password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        """Environment of every service (and of any client that opens this instance)."""
        pw, port = self.password(), self.ports.postgres
        env = dict(os.environ)
        env.update(
            {
                "DAGSTER_HOME": str(self.home),
                "DAGSTER_PG_HOST": "127.0.0.1",
                "DAGSTER_PG_PORT": str(port),
                "DAGSTER_PG_USER": PG_SUPERUSER,
                "DAGSTER_PG_PASSWORD": pw,
                "DAGSTER_PG_DB": DAGSTER_DB,
                "MLFLOW_TRACKING_URI": f"postgresql+psycopg2://{PG_SUPERUSER}:{pw}@127.0.0.1:{port}/{MLFLOW_DB}",
                "ROADWORK_MLFLOW_ARTIFACT_ROOT": str(self.home / "mlartifacts"),
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            }
        )
        return env

    # -- PostgreSQL -------------------------------------------------------------------------
    def _pg_user(self) -> str | None:
        """None when not root; else the unprivileged user postgres runs as (created if needed)."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "roadwork-pg"):
            try:
                pwd.getpwnam(name)
                return name
            except KeyError:
                continue
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "roadwork-pg"], check=True
        )
        return "roadwork-pg"

    def _pg(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self.state.pg_user:
            cmd = ["runuser", "-u", self.state.pg_user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)

    def _check_traversable(self, user: str) -> None:
        uid = pwd.getpwnam(user).pw_uid
        for d in [self.home, *self.home.parents]:
            st = d.stat()
            if not (st.st_mode & 0o001 or st.st_uid == uid):
                raise PermissionError(
                    f"postgres runs as '{user}' and cannot enter {d} (mode {oct(st.st_mode & 0o777)}): "
                    f"put the instance elsewhere or `chmod o+x {d}`"
                )

    def _init_postgres(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise FileNotFoundError(
                f"{PG_BIN}/initdb not found: install Debian's postgresql-15 (apt-get install postgresql-15)"
            )
        self.state.pg_user = self._pg_user()
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, mode=0o700)
        pwfile = self.dir / "secrets" / "initdb_pw"
        pwfile.write_text(self.password())
        if self.state.pg_user:
            self._check_traversable(self.state.pg_user)
            ent = pwd.getpwnam(self.state.pg_user)
            for p in (self.pgdata, pwfile, pwfile.parent):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        try:
            self._pg(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                PG_SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            )
        finally:
            pwfile.unlink(missing_ok=True)
            if self.state.pg_user:
                os.chown(pwfile.parent, os.geteuid(), os.getegid())

    def _write_pg_conf(self) -> None:
        conf = self.pgdata / "postgresql.auto.conf"
        # ALTER SYSTEM's file; rewritten at every start so the port follows the state
        conf.write_text(
            f"listen_addresses = '127.0.0.1'\nport = {self.ports.postgres}\nunix_socket_directories = ''\nmax_connections = 200\n"
        )
        if self.state.pg_user:
            ent = pwd.getpwnam(self.state.pg_user)
            os.chown(conf, ent.pw_uid, ent.pw_gid)

    def start_postgres(self) -> None:
        self._write_pg_conf()
        log = self.logs / "postgres.log"
        log.touch()
        if self.state.pg_user:
            ent = pwd.getpwnam(self.state.pg_user)
            os.chown(log, ent.pw_uid, ent.pw_gid)
        self._pg("pg_ctl", "-D", str(self.pgdata), "-l", str(log), "-w", "-t", "60", "start")

    def restart_postgres(self) -> None:
        """Fast shutdown (every connection dropped mid-transaction), then start again."""
        self.stop_postgres()
        self.start_postgres()

    def stop_postgres(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast", "stop", check=False)

    def postgres_running(self) -> bool:
        return (
            self.pgdata.exists() and self._pg("pg_ctl", "-D", str(self.pgdata), "status", check=False).returncode == 0
        )

    def _connect(self, db: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.ports.postgres,
            user=PG_SUPERUSER,
            password=self.password(),
            dbname=db,
            connect_timeout=10,
        )

    def _create_databases(self) -> None:
        conn = self._connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in (DAGSTER_DB, MLFLOW_DB):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()

    # -- instance files ---------------------------------------------------------------------
    def _write_instance_files(self) -> None:
        shutil.copyfile(DEPLOY_INSTANCE_YAML, self.home / "dagster.yaml")
        (self.home / "workspace.yaml").write_text(
            f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {self.ports.grpc}\n      location_name: {LOCATION}\n"
        )
        for d in ("artifacts", "mlartifacts"):
            (self.home / d).mkdir(exist_ok=True)

    def _migrate(self) -> None:
        """Create the Dagster and MLflow schemas once, before several processes race to."""
        code = (
            "import dagster as dg, mlflow, os; dg.DagsterInstance.get().get_runs(limit=1); "
            "mlflow.MlflowClient(os.environ['MLFLOW_TRACKING_URI']).search_experiments(max_results=1)"
        )
        subprocess.run(
            [sys.executable, "-c", code],
            env=self.env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )

    # -- Dagster services -------------------------------------------------------------------
    def _command(self, name: str) -> list[str]:
        ws = str(self.home / "workspace.yaml")
        if name == "code_server":
            return [
                sys.executable,
                "-m",
                "dagster",
                "code-server",
                "start",
                "-m",
                "roadwork_assets.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.ports.grpc),
                "--location-name",
                LOCATION,
            ]
        if name == "daemon":
            return [sys.executable, "-m", "dagster._daemon", "run", "-w", ws]
        port = self.ports.webserver if name == "webserver" else self.ports.webserver_ro
        return [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            ws,
            *(["--read-only"] if name == "webserver_ro" else []),
        ]

    def start_service(self, name: str) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                self._command(name),
                env=self.env(),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.state.pids[name] = proc.pid
        self._save_state()
        self._started_at = time.time()
        _wait(lambda: self._ready(name, proc), START_TIMEOUT_S, f"{name} (log: {self.logs / (name + '.log')})")
        return proc.pid

    def _ready(self, name: str, proc: subprocess.Popen | None = None) -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: see {self.logs / (name + '.log')}")
        if name == "code_server":
            from dagster._grpc.client import DagsterGrpcClient

            try:
                DagsterGrpcClient(port=self.ports.grpc, host="127.0.0.1").ping("up")
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return False
        if name == "daemon":
            return self.daemon_healthy(since=self._started_at)
        url = self.url(read_only=name == "webserver_ro") + "/server_info"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def daemon_healthy(self, since: float = 0.0) -> bool:
        """Every daemon has a fresh heartbeat (what the UI's daemon page shows), newer than ``since``
        (so a restarted daemon is not taken for the one it replaces)."""
        code = (
            "import dagster as dg; from dagster._daemon.controller import all_daemons_healthy; i = dg.DagsterInstance.get(); "
            "hb = i.get_daemon_heartbeats(); "
            f"print(bool(hb) and min(h.timestamp for h in hb.values()) > {since} and all_daemons_healthy(i, heartbeat_tolerance_seconds=60))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )
        return out.stdout.strip().endswith("True")

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        """Signal the service's process group; SIGKILL whatever is left after ``timeout_s``."""
        pid = self.state.pids.pop(name, None)
        self._save_state()
        if pid is None or not _pid_alive(pid):
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        try:
            _wait(lambda: not _pid_alive(pid), timeout_s, f"{name} stop", poll_s=0.2)
        except TimeoutError:
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def kill(self, name: str) -> int:
        """SIGKILL the service's main process only (fault injection); returns its pid."""
        pid = self.state.pids.pop(name)
        self._save_state()
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _pid_alive(pid), 10, f"{name} SIGKILL", poll_s=0.1)
        return pid

    def url(self, read_only: bool = False) -> str:
        return f"http://127.0.0.1:{self.ports.webserver_ro if read_only else self.ports.webserver}"

    # -- lifecycle --------------------------------------------------------------------------
    def up(self) -> None:
        """Start every service (those already running are left as they are)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        for f in ("postgres", "grpc", "webserver", "webserver_ro"):
            if getattr(self.ports, f) == 0:
                setattr(self.ports, f, free_port())
        self._init_postgres()
        self._save_state()
        if not self.postgres_running():
            self.start_postgres()
        self._create_databases()
        self._write_instance_files()
        self._migrate()
        for name in SERVICES:
            pid = self.state.pids.get(name)
            if pid is None or not _pid_alive(pid):
                self.start_service(name)

    def down(self) -> None:
        """Stop the webservers, the daemon and the code server (with their runs), then PostgreSQL."""
        for name in reversed(SERVICES):
            self.stop_service(name)
        self.stop_postgres()

    def status(self) -> dict[str, str]:
        out = {"postgres": f"running on 127.0.0.1:{self.ports.postgres}" if self.postgres_running() else "stopped"}
        for name in SERVICES:
            pid = self.state.pids.get(name)
            alive = pid is not None and _pid_alive(pid)
            out[name] = f"running (pid {pid})" if alive else "stopped"
        out["webserver_url"] = self.url()
        out["read_only_url"] = self.url(read_only=True)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="local production mode of the roadwork platform")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--home",
        default=os.environ.get("ROADWORK_PLATFORM_HOME", str(REPO / "platform_home")),
        help="instance directory",
    )
    args = parser.parse_args(argv)
    platform = Platform(args.home)
    if args.command == "up":
        platform.up()
    elif args.command == "down":
        platform.down()
    status = platform.status()
    for k, v in status.items():
        print(f"{k:<14} {v}")
    if args.command == "up":
        print(
            f"\nDAGSTER_HOME={platform.home}; logs in {platform.logs}; stop with: python -m roadwork_assets.platform down --home {platform.home}"
        )
    return 0 if args.command != "status" or all("stopped" not in v for v in status.values()) else 3


if __name__ == "__main__":
    raise SystemExit(main())
