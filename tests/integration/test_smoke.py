from tests.support import Client


def test_create_show_delete(client: Client, base_image: dict) -> None:
    reply = client.post("/v1/vms", {"name": "vm1", "cpu": 1, "ram": 256, "image_name": "base"})
    assert reply.status == 202
    task = client.wait_task(reply.body["task"]["id"])
    assert task["status"] == "succeeded"
    assert client.get("/v1/vms/vm1").body["status"] == "running"
