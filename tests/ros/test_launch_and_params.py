"""The launch file and config/params.yaml name only parameters the node declares, and the node
takes the YAML through the standard --params-file."""

import ast
import re
import subprocess
import time

import yaml
from rcl_interfaces.srv import GetParameters, ListParameters

import peer as p

LAUNCH = p.ROOT / "launch/moe_vla.launch.py"
PARAMS = p.ROOT / "config/params.yaml"


def declared() -> dict:
    out = subprocess.run([str(p.installed("moe_vla_node")), "--list-params"], check=True,
                         capture_output=True, text=True).stdout
    return dict(line.split("\t", 1) for line in out.splitlines())


def launch_parameter_names() -> set:
    """String keys of the override dict and parameters assigned by subscript in the launch file."""
    tree = ast.parse(LAUNCH.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            names |= {k.value for k in node.keys if isinstance(k, ast.Constant)}
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "overrides":
            if isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
            if any(isinstance(n, ast.Subscript) and getattr(n.value, "id", "") == "overrides" for n in ast.walk(node)):
                names |= {e.value for e in node.iter.elts if isinstance(e, ast.Constant)}
    return names


def launch_arguments() -> set:
    tree = ast.parse(LAUNCH.read_text())
    return {
        call.args[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument"
    }


def test_launch_file_names_declared_parameters_and_the_documented_arguments():
    names = launch_parameter_names()
    assert names == {"model_dir", "use_sim_time", "use_stamped"}
    assert names <= declared().keys()
    assert launch_arguments() == {"model_dir", "params_file", "namespace", "use_sim_time", "use_stamped",
                                  "image_topic", "cmd_vel_topic"}


def test_params_yaml_sets_every_declared_parameter_each_with_a_comment():
    doc = yaml.safe_load(PARAMS.read_text())
    params = doc["/**"]["ros__parameters"]
    assert set(params) == set(declared())
    lines = PARAMS.read_text().splitlines()
    for i, line in enumerate(lines):
        key = re.match(r"^    (\w+):", line)
        if key:
            assert lines[i - 1].strip().startswith("#"), f"{key.group(1)} has no comment above it"


def test_node_reads_the_yaml_through_params_file(peer, start_node, domain_id):
    node = start_node({"control_rate_hz": 25.0}, extra_args=["--params-file", str(PARAMS)])
    list_client = peer.node.create_client(ListParameters, "moe_vla_node/list_parameters")
    get_client = peer.node.create_client(GetParameters, "moe_vla_node/get_parameters")
    # A bound, not a timing check: discovery on a loaded CI machine has taken over 20 s.
    for client in (list_client, get_client):
        assert client.wait_for_service(timeout_sec=60), f"{client.srv_name} not discovered; node log:\n{node.log()}"

    def call(client, request):
        future = client.call_async(request)
        return p.wait_until(lambda: future.done() and future.result(), 10, "a parameter service answer")

    listed = call(list_client, ListParameters.Request()).result.names
    assert set(declared()) <= set(listed)
    values = call(get_client, GetParameters.Request(names=["max_accel_z", "image_input", "control_rate_hz"])).values
    assert values[0].double_value == 2.0  # from the YAML
    assert values[1].string_value == "raw"
    assert values[2].double_value == 25.0  # -p after --params-file wins
    assert node.alive()
    assert "unknown parameter" not in node.log()


def test_unknown_and_mistyped_parameters(tmp_path, start_node, domain_id):
    node = start_node({"max_speeed": 3.0})
    p.wait_until(lambda: "ignoring unknown parameter 'max_speeed'" in node.log(), 20, "the unknown-parameter warning")
    bad = start_node({"control_rate_hz": "fast"}, name="mistyped")
    code = bad.proc.wait(30)
    assert code != 0
    lines = [line for line in bad.log().splitlines() if line.startswith("moe_vla_node:")]
    assert len(lines) == 1 and "control_rate_hz" in lines[0], bad.log()


def test_a_cuda_device_without_cuda_support_is_refused_with_the_reason(start_node, domain_id):
    node = start_node({"device": "cuda:0"})
    assert node.proc.wait(30) != 0
    lines = [line for line in node.log().splitlines() if line.startswith("moe_vla_node:")]
    assert len(lines) == 1 and "device" in lines[0] and "no CUDA support" in lines[0], node.log()
    bad = start_node({"device": "tpu"}, name="unknown_device")
    assert bad.proc.wait(30) != 0
    assert "neither \"cpu\" nor \"cuda:N\"" in bad.log(), bad.log()
