#!/usr/bin/env python3
"""Writes tests/data/go2_policy_reference.json: observations recorded while the Go2 walks in
MuJoCo under the shipped walking policy, and the policy's outputs for them from onnxruntime.
The candle port (src/sim/physics/policy.rs) is tested against these outputs.

Run once after scripts/setup_physics.sh, in its venv with the reference tools added:

    cache=${MOE_VLA_PHYSICS_DIR:-${XDG_CACHE_HOME:-~/.cache}/moe_vla/physics}
    $cache/venv/bin/pip install -r physics/reference-tools.txt
    $cache/venv/bin/python scripts/physics_reference.py $cache

The recording loop is deliberately simple (PD in Python, no actuator lag): it only needs
observations the policy really meets (standing, walking, turning, side-stepping).
"""

import hashlib
import json
import pathlib
import sys

import mujoco
import numpy as np
import onnxruntime as ort

DEFAULT_POSE = np.array([0.0, 0.8, -1.5] * 4)
ACTION_SCALE = np.array([0.125, 0.25, 0.25] * 4)
JOINTS = [f"{leg}_{part}_joint" for leg in ("FR", "FL", "RR", "RL") for part in ("hip", "thigh", "calf")]
KP, KD = 20.0, 0.5


def main():
    cache = pathlib.Path(sys.argv[1])
    onnx_path = cache / "policy/policy.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    spec = mujoco.MjSpec.from_file(str(cache / "go2/go2.xml"))
    spec.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05])
    spec.option.timestep = 0.0025
    model = spec.compile()
    data = mujoco.MjData(model)
    qpos = [model.jnt_qposadr[model.joint(j).id] for j in JOINTS]
    dofs = [model.jnt_dofadr[model.joint(j).id] for j in JOINTS]
    actuators = [next(a for a in range(model.nu) if model.actuator_trnid[a, 0] == model.joint(j).id) for j in JOINTS]
    data.qpos[2] = 0.33
    data.qpos[qpos] = DEFAULT_POSE
    mujoco.mj_forward(model, data)

    def act(obs):
        (out,) = session.run(None, {session.get_inputs()[0].name: obs[None, :].astype(np.float32)})
        return out[0]

    last = np.zeros(12)
    # (command, ticks at 50 Hz, ticks at which to record)
    plan = [((0.0, 0.0, 0.0), 25, {0, 24}), ((0.5, 0.0, 0.0), 100, {10, 60, 99}), ((0.0, 0.0, 0.5), 75, {50}),
            ((0.3, 0.3, -0.4), 75, {40, 74})]
    observations, actions = [], []
    for command, ticks, record in plan:
        for tick in range(ticks):
            w, x, y, z = data.qpos[3:7]
            gravity = np.array([-2 * (x * z - w * y), -2 * (y * z + w * x), -(1 - 2 * (x * x + y * y))])
            obs = np.concatenate([data.qvel[3:6] * 0.25, gravity, command, data.qpos[qpos] - DEFAULT_POSE,
                                  data.qvel[dofs] * 0.05, last]).astype(np.float32)
            action = act(obs)
            if tick in record:
                observations.append(obs)
                actions.append(action)
            last = action.astype(np.float64)
            targets = DEFAULT_POSE + last * ACTION_SCALE
            for _ in range(8):
                data.ctrl[actuators] = KP * (targets - data.qpos[qpos]) - KD * data.qvel[dofs]
                mujoco.mj_step(model, data)
    if data.qpos[2] < 0.2:
        sys.exit("physics_reference: the robot fell while recording")
    out = {
        "about": "45-d observations recorded while the Go2 walked under policy.onnx, and onnxruntime's outputs",
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "onnxruntime": ort.__version__,
        "mujoco": mujoco.__version__,
        "observations": [[float(v) for v in o] for o in observations],
        "actions": [[float(v) for v in a] for a in actions],
    }
    path = pathlib.Path(__file__).resolve().parent.parent / "tests/data/go2_policy_reference.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1)
    for row in out["observations"] + out["actions"]:  # one row a line
        text = text.replace(json.dumps(row, indent=1).replace("\n", "\n  "), json.dumps(row), 1)
    path.write_text(text + "\n")
    print(f"physics_reference: {len(observations)} observations in {path}; the robot walked to "
          f"x {data.qpos[0]:.2f} m, y {data.qpos[1]:.2f} m, body height {data.qpos[2]:.3f} m")


if __name__ == "__main__":
    main()
