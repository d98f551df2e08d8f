"""A fresh, offline Python environment holding only a submission's requirements, and a network-less run.

"Fresh environment" here means: a new ``python -m venv`` (no system or user site packages, no
pip) into which only the distributions named in the folder's ``requirements.txt`` (plus the
validator's own numpy, nibabel and PyYAML) and their dependency closure (``importlib.metadata``
``Requires-Dist``, markers evaluated, extras left out) are exposed, at the pinned versions, taken
from the current environment: a folder of symbolic links to those distributions' installed files,
added to the venv through a ``.pth`` file. A pin this environment does not satisfy is refused
(nothing is downloaded); :func:`pip_environment` really pip-installs the requirements where the
network allows. The run itself happens in a subprocess (``python -I``, CUDA hidden) whose audit
hook refuses every socket connection and name lookup and logs the attempt, so any network use
inside ``extract`` is seen even if the extractor catches the error.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from anatcl_core.data.files import read_text

#: What BrainFMBench's validator installs beside a folder's requirements.
VALIDATOR_PACKAGES = ("numpy", "nibabel", "PyYAML")
NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                  "socket.sendto", "socket.sendmsg")

_DRIVER = '''
import importlib.util, json, sys
log_path, folder, args = sys.argv[1], sys.argv[2], sys.argv[3:]
BLOCKED = set({events!r})

def no_network(event, details):
    if event in BLOCKED:
        with open(log_path, "a") as log:
            log.write(json.dumps([event, repr(details)[:200]]) + "\\n")
        raise PermissionError("network use refused during extract: " + event)

sys.addaudithook(no_network)
spec = importlib.util.spec_from_file_location("submission_extract", folder + "/extract.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.extract(*args)
'''


class SandboxError(RuntimeError):
    """The environment cannot be built as the requirements ask; the message names the requirement."""


def read_requirements(path: Path) -> list[Requirement]:
    """The pinned ``name==version`` lines of a requirements file (comments and blanks skipped).

    Raises:
        SandboxError: no regular UTF-8 file, or a line that is not one exact pin, naming the file (and line).
    """
    out = []
    text = read_text(path, "a requirements file of name==version pins", SandboxError)
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as err:
            raise SandboxError(f"{path}:{number}: {line!r} is not a requirement "
                               f"({' '.join(str(err).split())})") from None
        pins = [s for s in requirement.specifier if s.operator == "=="]
        if len(pins) != 1 or len(requirement.specifier) != 1 or "*" in pins[0].version:
            raise SandboxError(f"{path}:{number}: {line!r} is not pinned; expected exactly name==version")
        out.append(requirement)
    return out


def _installed(name: str, where: str) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise SandboxError(f"{where}: {name} is not installed here; nothing is downloaded (use --pip "
                           "where the network allows)") from None


def closure(requirements: list[Requirement], where: str) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions of ``requirements`` and of everything they require, by canonical name.

    Raises:
        SandboxError: a pin this environment does not satisfy, or a distribution not installed.
    """
    found: dict[str, importlib.metadata.Distribution] = {}
    for requirement in requirements:
        dist = _installed(requirement.name, where)
        have = Version(dist.version)
        for spec in requirement.specifier:
            if Version(spec.version).public != have.public:
                raise SandboxError(f"{where}: {requirement} pinned, but {dist.metadata['Name']} {dist.version} "
                                   "is what this environment has; refused (use --pip to install the pin)")
    todo = [Requirement(r.name) for r in requirements]
    marker_env = {**default_environment(), "extra": ""}
    while todo:
        requirement = todo.pop()
        key = canonicalize_name(requirement.name)
        if key in found:
            continue
        found[key] = dist = _installed(requirement.name, where)
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is None or sub.marker.evaluate(marker_env):
                todo.append(sub)
    return found


def _top_level(dist: importlib.metadata.Distribution) -> set[Path]:
    """The installed top-level entries of a distribution (packages, modules, ``.libs``, its dist-info)."""
    entries = set()
    for file in dist.files or []:
        parts = Path(file).parts
        if parts and parts[0] not in ("..", "__pycache__") and not parts[0].endswith(".pth"):
            entries.add(Path(dist.locate_file(parts[0])))
    return entries


def offline_environment(folder: Path, root: Path) -> Path:
    """A venv under ``root`` exposing only the folder's requirements (module docstring); its python.

    Raises:
        SandboxError: a requirement that is not pinned, not installed here, or at another version.
    """
    req_file = folder / "requirements.txt"
    requirements = read_requirements(req_file) if req_file.is_file() else []
    named = {canonicalize_name(r.name) for r in requirements}
    requirements += [Requirement(p) for p in VALIDATOR_PACKAGES if canonicalize_name(p) not in named]
    dists = closure(requirements, str(req_file))
    venv.EnvBuilder(with_pip=False, system_site_packages=False, clear=True, symlinks=True).create(root / "venv")
    links = root / "exposed"
    links.mkdir()
    for dist in dists.values():
        for entry in _top_level(dist):
            target = links / entry.name
            if entry.exists() and not target.exists():
                target.symlink_to(entry)
    python = root / "venv" / "bin" / "python"
    site = subprocess.run([str(python), "-I", "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "exposed_requirements.pth").write_text(f"{links}\n", encoding="utf-8")
    return python


def pip_environment(folder: Path, root: Path) -> Path:
    """A venv under ``root`` with the folder's requirements and the validator's packages pip-installed (network)."""
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    extra = ["-r", str(folder / "requirements.txt")] if (folder / "requirements.txt").is_file() else []
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *VALIDATOR_PACKAGES, *extra],
                          capture_output=True, text=True)
    if done.returncode:
        raise SandboxError(f"{folder}/requirements.txt: pip install failed: {done.stderr.strip()[-500:]}")
    return python


def run_extract(python: Path, folder: Path, args: list[str], scratch: Path,
                timeout_s: float) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run ``extract(*args)`` of ``folder`` with ``python``, networkless; (process, network attempts)."""
    driver = scratch / "driver.py"
    driver.write_text(_DRIVER.format(events=NETWORK_EVENTS), encoding="utf-8")
    log = scratch / "network.log"
    log.unlink(missing_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "CUDA_VISIBLE_DEVICES": "", "LC_ALL": "C.UTF-8",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([str(python), "-I", str(driver), str(log), str(folder.resolve()), *args],
                          capture_output=True, text=True, env=env, cwd=scratch, timeout=timeout_s)
    attempts = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return done, attempts


def current_python() -> str:
    """The interpreter running the checker (for the report)."""
    return f"{sys.executable} ({sys.version.split()[0]})"
