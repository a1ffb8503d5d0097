"""A real single-node Slurm cluster in a temporary folder: munged, MariaDB, slurmdbd, slurmctld and slurmd, each on a
socket or free port of its own, stopped by pid at the end. ``.ci/run`` installs the Debian packages.

    with single_node_slurm() as cluster: ...   # tests use the session fixture slurm_cluster (tests/conftest.py)
    python -m tests.slurm.cluster              # starts one, prints its SLURM_CONF and waits until Ctrl-C

slurmdbd (and the MariaDB it needs) is there because submitit reads job states from ``sacct`` alone, and in Slurm
22.05 plain ``sacct`` answers only through slurmdbd: with ``accounting_storage/none`` it exits 1 ("Slurm accounting
storage is disabled") and ``jobcomp/filetxt`` is read only by ``sacct -c``, which submitit never passes. Without it a
job that ends without a result (scancel, time limit) stays UNKNOWN to submitit, and waiting on it never ends.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = "slurm-wlm, slurmdbd, munge and mariadb-server"
PROGRAMS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")
PARTITION = "debug"
# seconds a requeued job waits before it may start again (Slurm's cred_expire: 120 by default, which the tests would
# wait out); it is also the lifetime of a job step's launch credential, so not much less on a loaded machine
REQUEUE_DELAY = 10


@dataclass(frozen=True)
class SlurmCluster:
    folder: Path  # the daemons' configuration, state, sockets and logs
    conf: Path  # slurm.conf; the client commands find it through SLURM_CONF
    env: dict[str, str] = field(repr=False)  # os.environ with SLURM_CONF, for subprocesses
    partition: str
    cpus: int  # of the one node

    def run(self, *command: str, timeout: float = 30) -> str:
        """A Slurm client command's standard output; raises with its standard error when it fails."""
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout


def find(program: str) -> str | None:
    return shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def unavailable() -> str | None:
    """Why no cluster can start here, or None."""
    missing = [program for program in PROGRAMS if find(program) is None]
    if missing:
        return f"{PACKAGES} are not installed (no {', '.join(missing)}): .ci/run installs them"
    if os.geteuid() != 0:
        return "the single-node Slurm runs its daemons as root (SlurmUser=root), and this is not root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line() -> tuple[str, int, str]:
    """NodeName, CPUs and RealMemory from ``slurmd -C``. The socket/core/thread layout is left out on purpose: with
    it, CR_CPU allocates whole cores, so a machine with hyper-threads would run fewer one-CPU jobs at once."""
    fields = dict(word.split("=", 1) for word in
                  subprocess.run([find("slurmd"), "-C"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.splitlines()[0].split())
    return fields["NodeName"], int(fields["CPUs"]), fields["RealMemory"]


def write_configuration(folder: Path, ports: dict[str, int]) -> tuple[Path, int]:
    node, cpus, memory = node_line()
    munge = folder / "munge.socket"
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=bench
SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge},cred_expire={REQUEUE_DELAY}
MpiDefault=none
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
AccountingStoragePass={munge}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'slurmctld.log'}
SlurmdLogFile={folder / 'slurmd.log'}
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    # slurmdbd reads slurmdbd.conf beside SLURM_CONF, and only when it is private to SlurmUser
    dbd = folder / "slurmdbd.conf"
    dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={munge}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mariadb']}
StorageUser=slurm
StorageLoc=slurm_acct_db
PidFile={folder / 'slurmdbd.pid'}
LogFile={folder / 'slurmdbd.log'}
""")
    dbd.chmod(0o600)
    for name in ("state", "spool"):
        (folder / name).mkdir()
    return conf, cpus


class Daemons:
    """Foreground daemons in sessions of their own (a Ctrl-C at the terminal reaches only us), stopped in reverse."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env, self.started = folder, env, []

    def start(self, name: str, *command: str) -> None:
        with open(self.folder / f"{name}.out", "wb") as out:
            process = subprocess.Popen([find(command[0]), *command[1:]], env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.started.append((name, process))

    def wait_until(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, process in self.started:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited {process.returncode} while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} after {timeout:.0f} s\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        tails = []
        for path in sorted(self.folder.glob("*.log")) + sorted(self.folder.glob("*.out")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            tails.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(tails)

    def stop(self, timeout: float = 15) -> None:
        for _, process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def answers(env: dict[str, str], *command: str, expect: str) -> bool:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and done.stdout.split() == [expect]


@contextlib.contextmanager
def single_node_slurm(timeout: float = 60) -> Iterator[SlurmCluster]:
    """Starts the cluster, yields once its node is idle and sacct answers; at the end cancels every job and stops
    the daemons by pid. Each wait is bounded by ``timeout`` seconds."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    # munged wants its socket's folder open to all (mode 0755), so not under pytest's private tmp folders
    folder = Path(tempfile.mkdtemp(prefix="slurm-"))
    folder.chmod(0o755)
    ports = {name: free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
    conf, cpus = write_configuration(folder, ports)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    key = folder / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o400)
    daemons = Daemons(folder, env)
    try:
        daemons.start("munged", "munged", "--foreground", f"--key-file={key}", f"--seed-file={folder / 'munge.seed'}",
                      f"--socket={folder / 'munge.socket'}", f"--pid-file={folder / 'munged.pid'}",
                      f"--log-file={folder / 'munged.log'}")
        created = subprocess.run([find("mariadb-install-db"), "--no-defaults", f"--datadir={folder / 'db'}",
                                  "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"],
                                 env=env, capture_output=True, text=True, timeout=timeout)
        if created.returncode:
            raise RuntimeError(f"mariadb-install-db exited {created.returncode}: {created.stdout}{created.stderr}")
        # no grant tables: a throw-away database that listens on 127.0.0.1 only
        daemons.start("mariadb", "mariadbd", "--no-defaults", f"--datadir={folder / 'db'}", "--user=root",
                      "--bind-address=127.0.0.1", f"--port={ports['mariadb']}", f"--socket={folder / 'mariadb.sock'}",
                      f"--pid-file={folder / 'mariadb.pid'}", f"--log-error={folder / 'mariadb.log'}",
                      "--skip-grant-tables", "--innodb-buffer-pool-size=64M")
        daemons.wait_until(lambda: accepts(ports["mariadb"]), "MariaDB", timeout)
        daemons.start("slurmdbd", "slurmdbd", "-D")
        daemons.wait_until(lambda: accepts(ports["slurmdbd"]), "slurmdbd", timeout)
        daemons.start("slurmctld", "slurmctld", "-D", "-i")
        daemons.start("slurmd", "slurmd", "-D")
        daemons.wait_until(lambda: answers(env, "sinfo", "-h", "-o", "%t", expect="idle"), "idle node", timeout)
        daemons.wait_until(lambda: answers(env, "sacctmgr", "-n", "-P", "list", "cluster", "format=cluster",
                                           expect="bench"), "cluster registered in slurmdbd", timeout)
        yield SlurmCluster(folder, conf, env, PARTITION, cpus)
    finally:
        try:
            cancel_all(env, timeout)
        finally:
            daemons.stop()
            shutil.rmtree(folder, ignore_errors=True)


def cancel_all(env: dict[str, str], timeout: float) -> None:
    """Cancels every job and waits until none is left: proctrack/pgid leaves running jobs behind a stopped slurmd."""
    if subprocess.run(["scancel", "--user=root"], env=env, capture_output=True, timeout=30).returncode:
        return  # slurmctld is not answering (it never started or died): there is no job to wait for
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True,
                         timeout=30).stdout.strip():
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs still in the queue {timeout:.0f} s after scancel")
        time.sleep(0.2)


def main() -> None:
    # Ctrl-C or kill stops the cluster (also when started in the background, where SIGINT arrives ignored)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.default_int_handler)
    with single_node_slurm() as cluster:
        print(f"export SLURM_CONF={cluster.conf}    # partition {cluster.partition}, {cluster.cpus} CPUs; "
              "Ctrl-C stops the cluster", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            print("stopping the cluster", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
