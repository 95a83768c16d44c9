"""`bake build` + `bake test` on AWS against a moto server, meant to run inside a loopback-only network
namespace (``unshare -n``), where an SSH attempt to the address moto invents cannot leave the machine.

    unshare -n sh -c 'ip link set lo up && exec python tests/e2e/aws_netns_scenario.py RESULT.json'

Starts its own moto server and Prefect server on 127.0.0.1, runs the two commands as a user would, then
writes what EC2 looks like afterwards to RESULT.json for the test to check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script inside the namespace: the shared test helpers by path
from tests.aws_seam import FIXTURE  # noqa: E402  (the shipped packer/ templates as moto builds them)
from tests.support.servers import free_port  # noqa: E402

BAKE = str(Path(sys.executable).parent / "bake")
PREFECT = str(Path(sys.executable).parent / "prefect")


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def main(out: Path) -> None:
    from moto.server import ThreadedMotoServer

    work = Path(tempfile.mkdtemp(prefix="bakery-netns-"))
    moto_port, prefect_port = free_port(), free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "BAKERY_AWS_WAITER_DELAY": "0.2",
        "BAKERY_STATE_DIR": str(work / "state"),
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("AWS_PROFILE", None)
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
        env=env,
        stdout=(work / "prefect-server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    result: dict[str, Any] = {"workdir": str(work)}
    try:
        wait_http(f"http://127.0.0.1:{prefect_port}/api/health", 120)
        version = f"0.0.0-netns.{os.getpid()}"

        def bake(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [BAKE, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
            )

        started = time.monotonic()
        built = bake("--json", "build", "--target", "aws", "--template-dir", FIXTURE, "--version", version)
        result["build"] = {
            "code": built.returncode,
            "seconds": time.monotonic() - started,
            "stdout": built.stdout,
            "stderr_tail": built.stderr[-4000:],
        }
        import boto3

        ec2 = boto3.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        images = ec2.describe_images(Owners=["self"])["Images"]
        result["images"] = [{"id": i["ImageId"], "tags": tags(i)} for i in images]
        if built.returncode != 0 or len(images) != 1:
            return
        ami = images[0]["ImageId"]

        started = time.monotonic()
        tested = bake("test", "--target", "aws", "--image", ami, "--ssh-timeout", "20s")
        result["test"] = {
            "code": tested.returncode,
            "seconds": time.monotonic() - started,
            "stderr_tail": tested.stderr[-6000:],
        }
        instances = [
            {"id": i["InstanceId"], "state": i["State"]["Name"], "tags": tags(i)}
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        ]
        result["instances"] = instances
        result["key_pairs"] = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
        result["security_groups"] = [
            {"id": g["GroupId"], "name": g["GroupName"], "tags": tags(g)}
            for g in ec2.describe_security_groups()["SecurityGroups"]
        ]
        image = ec2.describe_images(ImageIds=[ami])["Images"][0]
        snapshots = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "SnapshotId" in m.get("Ebs", {})]
        result["image_after"] = tags(image)
        result["snapshots_after"] = (
            [tags(s) for s in ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]] if snapshots else []
        )
    finally:
        out.write_text(json.dumps(result, indent=2, default=str))
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        moto.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
