"""A connector from a package of its own: installed in a venv, found, run in a flow.

The package under ``tests/fixtures/connector_package`` registers the ``echo``
connection type through the ``lobflows.connectors`` entry point group, as a
third party would. It is installed offline (no index, no build isolation)
into a fresh venv that sees LoB Flows and its dependencies through a ``.pth``
file naming this interpreter's site-packages, so nothing is fetched and the
fixture package is the only thing the venv installs.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from lobflows.store import RunStore
from tests import support

pytestmark = pytest.mark.acceptance
PACKAGE = support.REPO / "tests" / "fixtures" / "connector_package"

FLOW = """flow: shout
card:
  trigger: by hand
  data: {entity: greeting, sensitivity: public}
  transform: text -> shouted text
  target: the run store
  on_failure: dead letter
  owner: tests@example.com
trigger: {manual: {}}
steps:
  - id: shouted
    call: loud.shout
    with: {text: "{{ input.text }}"}
"""

CONNECTIONS = """connections:
  loud:
    type: echo
    prefix: "ECHO: "
"""


@pytest.fixture(scope="module")
def package_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the echo package, installed by pip without the network."""
    root = tmp_path_factory.mktemp("connector-package")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    _see_this_interpreters_packages(env_dir)
    # A copy, so the build leaves no egg-info or build folder in the repo.
    source = shutil.copytree(PACKAGE, root / "source")
    installed = subprocess.run(
        [
            str(_python(env_dir)),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return env_dir


def _see_this_interpreters_packages(env_dir: Path) -> None:
    # `addsitedir` (not a bare path line) so the editable install's own .pth
    # files are read too.
    lines = [
        f"import site; site.addsitedir({path!r})" for path in site.getsitepackages()
    ]
    target = _site_packages(env_dir) / "lobflows-host.pth"
    target.write_text("\n".join(lines) + "\n")


def _python(env_dir: Path) -> Path:
    return env_dir / ("Scripts" if sys.platform == "win32" else "bin") / "python"


def _site_packages(env_dir: Path) -> Path:
    found = subprocess.run(
        [
            str(_python(env_dir)),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip())


def _cli(
    env_dir: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_python(env_dir)), "-m", "lobflows", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_connectors_list_shows_a_type_from_an_installed_package(
    package_venv: Path, tmp_path: Path
):
    env = support.base_env(f"sqlite:///{tmp_path / 'runs.db'}")

    listed = _cli(package_venv, env, "connectors", "list")

    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    echo = next((row for row in rows if "echo" in row), None)
    assert echo is not None, listed.stdout
    assert "shout" in echo and "lobflows_echo" in echo


async def test_a_flow_calls_a_connector_from_an_installed_package(
    package_venv: Path, tmp_path: Path
):
    # given a flow calling an `echo` connection, and its input
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "shout.yaml").write_text(FLOW)
    (flows / "connections.yaml").write_text(CONNECTIONS)
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"text": "hello, world"}))
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    env = support.base_env(store_url)

    # when it runs in the venv that has the package
    ran = _cli(
        package_venv, env, "run", "shout", "--input", str(data), "--flows", str(flows)
    )

    # then the step's output is the package's answer
    assert ran.returncode == 0, ran.stdout + ran.stderr
    store = RunStore(store_url)
    try:
        (run,) = await store.list_runs(flow="shout", limit=5)
        steps = await store.completed_steps(run.id)
    finally:
        await store.close()
    assert run.status == "succeeded"
    assert steps["shouted"] == {"text": "ECHO: HELLO, WORLD"}
