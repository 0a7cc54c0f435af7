import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import peer as p  # noqa: E402



@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model made by `moe_vla init` (untrained, fixed seed)."""
    out = tmp_path_factory.mktemp("model") / "tiny"
    subprocess.run(
        [str(p.installed("moe_vla")), "init", "--preset", "tiny", "--seed", "7",
         "--instructions", str(p.ROOT / "data/instructions.txt"), "--out", str(out)],
        check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def scenes(model_dir, tmp_path_factory):
    """Pictures whose offline decisions move the robot, and one where the model terminates.
    The model is untrained, so which picture does what is looked up, not assumed."""
    tmp = tmp_path_factory.mktemp("frames")
    instruction = p.INSTRUCTIONS[0]
    moving, terminating = [], []
    for seed in range(40):
        img = p.picture(p.WIDTH, p.HEIGHT, seed)
        decision = p.offline_decision(model_dir, img, instruction, tmp)
        if decision["terminate"]:
            terminating.append((img, decision))
        elif abs(decision["twist"]["x_vel"]) > 0.05:
            moving.append((img, decision))
        if len(moving) >= 2 and terminating:
            break
    assert moving, "no test picture makes the model move"
    return {"instruction": instruction, "moving": moving, "terminating": terminating}


@pytest.fixture
def domain_id() -> int:
    return p.fresh_domain_id()


@pytest.fixture
def peer(domain_id):
    peer = p.Peer(domain_id)
    yield peer
    peer.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item, so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def start_node(domain_id, model_dir, tmp_path, request):
    """Starts moe_vla_node with the test model, armed at start (`start_enabled`) unless the test's
    parameters say otherwise (`start_enabled=None`: not given at all, the node's own default);
    every node is stopped at the end of the test, and a failed test's report ends with the tail of
    each node's log."""
    nodes = []

    def start(params=None, remaps=(), name="node", domain=None, extra_args=()):
        params = {"model_dir": str(model_dir), "inference_threads": 2, "start_enabled": True, **(params or {})}
        params = {k: v for k, v in params.items() if v is not None}
        node = p.NodeProcess(tmp_path, domain if domain is not None else domain_id, params, remaps, name,
                             extra_args)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for node in nodes:
            report.sections.append((f"log of {node.log_path.name}", node.log()[-4000:]))
