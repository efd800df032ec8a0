"""The front door the planner gives a service (inferfleet.frontdoor), its names and its API server count."""

import pytest
from helpers import FIXTURES, ROOT, _load

from inferfleet.frontdoor import fleet_front_door, haproxy_config
from inferfleet.planner import HostInput, plan_hosts

NVIDIA = {"inferfleet_platform": "nvidia", "inferfleet_images": {"nvidia": "vllm/vllm-openai:v0.11.0"},
          "inferfleet_accelerator": {"model": "H100", "count": 8, "memory_gib": 80}, "ansible_host": "10.0.0.7"}


def rerank(**spec):
    return {"name": "bge", "model": "/m/bge", "task": "rerank", "devices": [2, 3], "replicas": 2, "port": 8001,
            "weights_gib": 1, **spec}


def plan(services, **extra):
    return plan_hosts([HostInput("h1", {**NVIDIA, **extra, "inferfleet_services": services}, ("nvidia",), None,
                                 None)])


def test_replicas_share_one_front_door_that_checks_their_health():
    result = plan([rerank(front_door={"port": 8000})])
    assert result.ok, result.errors
    host = result.hosts["h1"]
    (door,) = host.front_doors
    assert door["url"] == "http://10.0.0.7:8000"
    (backend,) = door["backends"]
    assert [(s["name"], s["port"]) for s in backend["servers"]] == [
        ("bge-0", 8001), ("bge-1", 8002), ("bge-2", 8003), ("bge-3", 8004)]
    config = door["config"]
    assert "bind :8000" in config and "balance leastconn" in config
    assert "option httpchk GET /health" in config
    assert "server bge-2 127.0.0.1:8003 check" in config
    assert "http-response set-header X-Inferfleet-Instance h1/%[srv_name]" in config
    assert "http-response set-header X-Inferfleet-Model /m/bge" in config
    # each instance knows where its front door takes it out of rotation
    assert host.instances[3]["front_door"] == {"socket": "/etc/inferfleet/front-door/8000/run/admin.sock",
                                               "backend": "bge-0", "server": "bge-3", "port": 8000,
                                               "scheme": "http"}
    assert door["container"]["image"] == "docker.io/library/haproxy:3.0"
    assert "/etc/inferfleet/front-door/8000/config:/etc/inferfleet-front-door:ro" in door["container"]["volumes"]
    assert door["container"]["name"] == "inferfleet-front-door-8000" and door["services"] == ["bge"]


def test_a_service_without_front_door_has_none():
    host = plan([rerank()]).hosts["h1"]
    assert host.front_doors == [] and "front_door" not in host.instances[0]


def test_telemetry_headers_can_be_switched_off_and_balance_chosen():
    (door,) = plan([rerank(front_door={"port": 8000, "telemetry_headers": False, "balance": "roundrobin"})]
                   ).hosts["h1"].front_doors
    assert "X-Inferfleet" not in door["config"] and "balance roundrobin" in door["config"]


def test_several_models_are_routed_by_the_request_model_field():
    spec = {"name": "pool", "models": ["/m/gte", "/m/bge-m3"], "task": "embed", "devices": [0], "port": 8771,
            "weights_gib": 1, "front_door": {"port": 8770}}
    (door,) = plan([spec]).hosts["h1"].front_doors
    assert [b["names"] for b in door["backends"]] == [["gte", "/m/gte"], ["bge-m3", "/m/bge-m3"]]
    config = door["config"]
    assert "req.body,json_query('$.model')" in config and "option http-buffer-request" in config
    assert "use_backend pool-1 if { var(txn.model) -m str bge-m3 /m/bge-m3 }" in config
    assert "default_backend pool-0" in config


def test_two_services_share_a_front_door_as_seed_000_shares_a_port():
    embed = {"name": "gte-embed", "model": "/m/gte", "task": "embed", "devices": [4], "share_devices": True,
             "port": 8771, "weights_gib": 1, "front_door": {"port": 8770}}
    rank = dict(embed, name="gte-rerank", model="/m/gte-rerank", task="rerank", port=8772)
    result = plan([embed, rank])
    assert result.ok, result.errors
    (door,) = result.hosts["h1"].front_doors
    assert door["services"] == ["gte-embed", "gte-rerank"]
    assert [(b["name"], b["names"]) for b in door["backends"]] == [
        ("gte-embed-0", ["gte-embed", "/m/gte"]), ("gte-rerank-0", ["gte-rerank", "/m/gte-rerank"])]
    assert "use_backend gte-rerank-0 if { var(txn.model) -m str gte-rerank /m/gte-rerank }" in door["config"]


def test_a_front_door_port_an_instance_uses_is_refused():
    result = plan([rerank(front_door={"port": 8003})])
    assert [(e.field, e.message) for e in result.errors] == [
        ("inferfleet_services[bge].front_door.port", "8003 is also the port of instance bge-2 on this host")]


def test_services_sharing_a_front_door_must_agree_and_serve_distinct_names():
    other = {"name": "emb", "model": "/m/emb", "task": "embed", "devices": [4], "port": 9001, "weights_gib": 1,
             "front_door": {"port": 8000, "balance": "roundrobin"}}
    (error,) = plan([rerank(front_door={"port": 8000}), other]).errors
    assert (error.field, error.message) == (
        "inferfleet_services[emb].front_door", "8000 is also the front door of service bge, with other settings "
        "(balance leastconn, telemetry_headers true there, balance roundrobin, telemetry_headers true here)")
    same_name = dict(other, served_model_name="bge", front_door={"port": 8000})
    (error,) = plan([rerank(front_door={"port": 8000}), same_name]).errors
    assert error.message == ("port 8000: model name 'bge' is also served by service bge behind this front door, "
                             "which routes by the request's model")


def test_an_unknown_balance_is_refused_with_the_known_ones():
    result = plan([rerank(front_door={"port": 8000, "balance": "sticky"})])
    (error,) = result.errors
    assert error.field == "inferfleet_services[bge].front_door.balance"
    assert error.message == "must be one of leastconn, roundrobin or random, got 'sticky'"


def test_an_empty_front_door_image_is_refused_only_where_a_front_door_is_planned():
    assert plan([rerank()], inferfleet_front_door_image="").ok
    (error,) = plan([rerank(front_door={"port": 8000})], inferfleet_front_door_image="").errors
    assert error.field == "inferfleet_front_door_image"


def test_hosts_planned_alike_name_themselves_in_their_telemetry_header():
    hosts = [HostInput(name, {**NVIDIA, "ansible_host": address, "inferfleet_services": [
        rerank(front_door={"port": 8000})]}, ("nvidia",), None, None)
        for name, address in (("h1", "10.0.0.7"), ("h2", "10.0.0.8"))]
    doors = {name: p.front_doors[0] for name, p in plan_hosts(hosts).hosts.items()}
    assert doors["h2"]["url"] == "http://10.0.0.8:8000"
    assert "X-Inferfleet-Instance h2/%[srv_name]" in doors["h2"]["config"]
    assert "X-Inferfleet-Instance h1/" in doors["h1"]["config"]


def test_words_haproxy_would_split_are_quoted():
    config = haproxy_config("s", "h1", 80, "leastconn", True, [
        {"name": "s-0", "service": "s", "names": ["a model"], "model": '/m/with "quotes"', "servers": []},
        {"name": "s-1", "service": "s", "names": ["b"], "model": "/m/b", "servers": []}])
    assert 'use_backend s-0 if { var(txn.model) -m str "a model" }' in config
    assert 'X-Inferfleet-Model "/m/with \\"quotes\\""' in config


def test_instances_answer_to_the_service_name_and_the_model_path():
    (inst,) = plan([rerank(devices=[2], replicas=1, served_model_name="bge-large")]).hosts["h1"].instances
    names = inst["args"][inst["args"].index("--served-model-name") + 1:][:2]
    assert names == ["bge-large", "/m/bge"] and inst["served_model_names"] == names
    assert inst["smoke"]["served_model_name"] == "bge-large"


def test_api_server_count_is_passed_where_the_vllm_version_has_it():
    (inst,) = plan([rerank(devices=[2], replicas=1, api_server_count=2)]).hosts["h1"].instances
    assert inst["args"][inst["args"].index("--api-server-count") + 1] == "2" and inst["api_server_count"] == 2
    old = plan([rerank(devices=[2], replicas=1, api_server_count=2, vllm_version="0.8.5")])
    (error,) = old.errors
    assert error.field == "inferfleet_services[bge].api_server_count"
    assert "--api-server-count exists from vLLM 0.9.0 on" in error.message


serve_filters = _load("inferfleet_serve_filters", ROOT / "plugins" / "filter" / "serve.py")


def stats_result(sample, port="8100"):
    return {"status": 200, "content": (FIXTURES / "frontdoor" / sample).read_text(),
            "item": {"Names": [f"/inferfleet-front-door-{port}"], "State": "running",
                     "Labels": {"inferfleet.front-door": port, "inferfleet.services": "emb,rr"}}}


def test_status_reads_which_instances_are_in_rotation_from_recorded_haproxy_statistics():
    (row,) = serve_filters.inferfleet_front_door_rows([stats_result("haproxy-2.6.12-stats.csv")], "h1")
    assert (row["port"], row["services"], row["state"]) == (8100, ["emb", "rr"], "running")
    assert row["in_rotation"] == [{"backend": "rr-0", "instance": "rr-0", "status": "UP"}]
    assert row["out_of_rotation"] == [{"backend": "emb-0", "instance": "emb", "status": "DOWN"},
                                      {"backend": "rr-0", "instance": "rr-1", "status": "MAINT"}]
    assert row["summary"] == "front door port 8100 (emb,rr): in rotation rr-0; out: emb DOWN, rr-1 MAINT"
    assert row["metrics"] == "http://h1:8100/front-door/metrics"
    (drained,) = serve_filters.inferfleet_front_door_rows([stats_result("haproxy-2.6.12-stats-drain.csv")], "h1")
    assert drained["in_rotation"] == [] and drained["summary"].endswith("in rotation none; out: emb DOWN, "
                                                                        "rr-0 DRAIN, rr-1 MAINT")


def test_a_front_door_without_statistics_is_reported_as_such():
    result = dict(stats_result("haproxy-2.6.12-stats.csv"), status=-1, content="",
                  msg="Status code was -1 and not [200]: Request failed: <urlopen error [Errno 2] No such file>")
    (row,) = serve_filters.inferfleet_front_door_rows([result], "h1")
    assert row["error"].startswith("Status code was -1") and row["in_rotation"] == []


def test_the_recorded_configuration_is_the_one_the_planner_writes():
    """The statistics above came from this planner's configuration (its sockets moved for the recording)."""
    hv = {"inferfleet_platform": "cpu", "inferfleet_images": {"cpu": "reg/vllm:1"},
          "inferfleet_vllm_versions": {"cpu": "0.32.0"},
          "inferfleet_services": [
              {"name": "emb", "model": "/models/m", "task": "embed", "port": 8101, "front_door": {"port": 8100}},
              {"name": "rr", "model": "/models/r", "task": "rerank", "port": 8200, "replicas": 2,
               "front_door": {"port": 8100}}],
          "inferfleet_api_keys": {"rr": "k"}}
    (door,) = plan_hosts([HostInput("h1", hv, ("cpu",), None, None)]).hosts["h1"].front_doors
    recorded = (FIXTURES / "frontdoor" / "haproxy-2.6.12-stats.cfg").read_text()
    # recorded before retry-on took the status codes vLLM answers while it stops, and before every front door read
    # the request whole (http-buffer-request moved from the frontend to the defaults); no statistic depends on them
    recorded = recorded.replace("retry-on conn-failure empty-response\n",
                                "retry-on conn-failure empty-response 500 502 503\n    option http-buffer-request\n")
    assert recorded.count("    option http-buffer-request\n") == 2
    recorded = "".join(recorded.rsplit("    option http-buffer-request\n", 1))
    moved = door["config"].replace("/run/inferfleet-front-door", "/tmp/hapx")
    assert moved.replace("/etc/inferfleet-front-door", "/tmp/hapcfg") == recorded


def prod_plans():
    from inferfleet.inventory import plan_inventory

    plan = plan_inventory(ROOT / "inventories" / "prod" / "hosts.yml")
    return {host: p.to_dict() for host, p in plan.hosts.items()}


def test_the_scrape_configuration_lists_every_instance_and_front_door_with_its_labels():
    import yaml

    from inferfleet.scrape import prometheus_config

    plans = prod_plans()
    document = yaml.safe_load(prometheus_config(plans, None, list(plans)))
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    assert jobs["vllm"]["metrics_path"] == "/metrics"
    assert jobs["inferfleet-front-door"]["metrics_path"] == "/front-door/metrics"
    instances = {g["labels"]["instance"]: g for g in jobs["vllm"]["static_configs"]}
    assert len(instances) == sum(len(p["instances"]) for p in plans.values())
    assert instances["bge-rerank-2"] == {"targets": ["10.20.2.11:8003"], "labels": {
        "host": "h100-node01", "service": "bge-rerank", "instance": "bge-rerank-2",
        "model": "/opt/share/plm/bge-reranker-large", "platform": "nvidia"}}
    doors = [g["labels"] for g in jobs["inferfleet-front-door"]["static_configs"]]
    assert [(d["host"], d["service"], d["instance"]) for d in doors] == [
        ("gateway01", "bge-rerank", "inferfleet-front-door-9001"),
        ("gaudi2-node01", "gte-embed,gte-rerank", "inferfleet-front-door-8770"),
        ("h100-node01", "bge-rerank", "inferfleet-front-door-8000")]


def test_a_limited_run_keeps_the_other_hosts_targets_and_drops_removed_hosts():
    import yaml

    from inferfleet.scrape import prometheus_config

    plans = prod_plans()
    full = prometheus_config(plans, None, list(plans))
    assert prometheus_config(plans, full, list(plans)) == full
    limited = prometheus_config({"h100-node01": plans["h100-node01"]}, full, list(plans))
    assert limited == full
    without_gaudi = prometheus_config({"h100-node01": plans["h100-node01"]}, full,
                                      [h for h in plans if h != "gaudi2-node01"])
    hosts = {g["labels"]["host"] for job in yaml.safe_load(without_gaudi)["scrape_configs"]
             for g in job["static_configs"]}
    assert hosts == {"h100-node01", "ascend-node01", "gateway01"}
    assert prometheus_config(plans, "not: [valid", list(plans)) == full


def test_the_effective_settings_are_read_from_the_container_command_line():
    argv = ["/models/m", "--port", "8101", "--max-num-seqs", "4", "--max-num-batched-tokens=2048",
            "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.3"]
    assert serve_filters.effective_settings(argv) == {
        "max_num_seqs": 4, "max_num_batched_tokens": 2048, "max_model_len": None, "tensor_parallel_size": 2,
        "api_server_count": None, "gpu_memory_utilization": 0.3}
    info = {"container": {"Config": {"Cmd": ["serve", *argv], "Image": "img", "Labels": {
        "inferfleet.instance": "emb", "inferfleet.service": "emb", "inferfleet.config-hash": "abc"}},
        "State": {"Running": True, "StartedAt": "2026-12-02T13:00:00Z"}}}
    document = serve_filters.inferfleet_effective_config([info, {"exists": False}], "h1", 8100)
    assert document["front_door_port"] == 8100
    assert document["instances"][0]["max_num_seqs"] == 4 and document["instances"][0]["running"] is True
    assert document["instances"][1]["running"] is False and document["instances"][1]["max_num_seqs"] is None


def test_the_parts_of_a_hosts_front_doors_are_listed_for_one_task_each():
    keyed_host = plan([rerank(front_door={"port": 8000})], inferfleet_api_keys={"bge": "sk-secret-1"}).hosts["h1"]
    keyed = keyed_host.front_doors
    opened = plan([rerank(name="other", port=8101, devices=[5], replicas=1,
                          front_door={"port": 9000})]).hosts["h1"].front_doors
    doors = [*keyed, *opened]
    assert serve_filters.inferfleet_front_door_parts(doors, "key_files") == [
        {"door": keyed[0]["name"], "directory": keyed[0]["directory"], "service": "bge"}]
    containers = serve_filters.inferfleet_front_door_parts(doors, "containers")
    assert [(c["door"], c["container"], c["secret"]) for c in containers] == [
        *((keyed[0]["name"], i["container"]["name"], True) for i in keyed_host.instances),
        (opened[0]["name"], "inferfleet-other", False)]
    assert len(keyed_host.instances) > 1
    assert "sk-secret-1" not in repr(containers)
    with pytest.raises(Exception, match="key_files or containers"):
        serve_filters.inferfleet_front_door_parts(doors, "keys")


def test_a_keyed_service_behind_a_front_door_listens_on_loopback_and_its_key_stays_out_of_the_plan():
    import json

    result = plan([rerank(front_door={"port": 8000})], inferfleet_api_keys={"bge": "sk-secret-1"})
    host = result.hosts["h1"]
    inst = host.instances[0]
    assert inst["args"][inst["args"].index("--host") + 1] == "127.0.0.1" and inst["api_key"] is True
    assert "deny deny_status 401 if !{ path /health } !{ req.hdr(authorization) -m str -f " \
           "/etc/inferfleet-front-door/keys/bge }" in host.front_doors[0]["config"]
    assert "sk-secret-1" not in json.dumps(result.to_dict())
    # without a front door the instance listens everywhere; vLLM checks the key on /v1 paths only, so a rerank
    # service is warned about
    open_plan = plan([rerank()], inferfleet_api_keys={"bge": "sk-secret-1"})
    assert open_plan.hosts["h1"].instances[0]["args"][2] == "0.0.0.0"
    assert [w.message for w in open_plan.warnings if w.field == "inferfleet_api_keys"] == [
        "service bge: vLLM checks the key on /v1 paths only, and /rerank answers without it"]
    # which services need a key is part of what a saved plan was made from; the key itself is not
    before = plan([rerank()]).hosts["h1"].inputs
    assert plan([rerank()], inferfleet_api_keys={"bge": "a"}).hosts["h1"].inputs != before
    assert plan([rerank()], inferfleet_api_keys={"bge": "a"}).hosts["h1"].inputs == \
        plan([rerank()], inferfleet_api_keys={"bge": "b"}).hosts["h1"].inputs


def test_instances_behind_a_loopback_front_door_are_scraped_through_it():
    import yaml

    from inferfleet.scrape import prometheus_config

    result = plan([rerank(front_door={"port": 8000})], inferfleet_api_keys={"bge": "k"})
    document = yaml.safe_load(prometheus_config({"h1": result.hosts["h1"].to_dict()}, None, ["h1"]))
    group = document["scrape_configs"][0]["static_configs"][0]
    assert group["targets"] == ["10.0.0.7:8000"] and group["labels"]["__metrics_path__"] == "/front-door/metrics/bge-0"


def test_a_front_door_with_a_certificate_speaks_https(tmp_path):
    pem = tmp_path / "door.pem"
    pem.write_text("not checked by the planner")
    result = plan_hosts([HostInput("h1", {**NVIDIA, "inferfleet_services": [
        rerank(front_door={"port": 8443, "certificate": "door.pem"})]}, ("nvidia",), None, tmp_path)])
    (door,) = result.hosts["h1"].front_doors
    assert door["url"] == "https://10.0.0.7:8443" and door["certificate"] == str(pem)
    assert "bind :8443 ssl crt /etc/inferfleet-front-door/tls.pem" in door["config"]
    (error,) = plan([rerank(front_door={"port": 8443, "certificate": "/nowhere/door.pem"})]).errors
    assert (error.field, error.message) == ("inferfleet_services[bge].front_door.certificate",
                                            "/nowhere/door.pem does not exist on the controller")


def test_a_fleet_front_door_spreads_over_the_hosts_front_doors_or_instances():
    gateway = {"inferfleet_platform": "cpu", "ansible_host": "10.0.0.9",
               "inferfleet_fleet_front_doors": [{"service": "bge", "port": 9000}]}
    hosts = [HostInput("gw", gateway, ("cpu",), None, None),
             HostInput("h1", {**NVIDIA, "inferfleet_services": [rerank(front_door={"port": 8000})]}, ("nvidia",),
                       None, None),
             HostInput("h2", {**NVIDIA, "ansible_host": "10.0.0.8", "inferfleet_services": [rerank()]},
                       ("nvidia",), None, None)]
    result = plan_hosts(hosts)
    assert result.ok, result.errors
    (planned,) = result.hosts["gw"].front_doors
    assert planned["fleet"] is True and planned["config"] is None and planned["url"] == "http://10.0.0.9:9000"
    plans = {name: p.to_dict() for name, p in result.hosts.items() if name != "gw"}
    door = fleet_front_door(planned, plans, "gw", keyed=True)
    (backend,) = door["backends"]
    assert [(s["name"], s["address"], s["port"]) for s in backend["servers"]] == [
        ("h1", "10.0.0.7", 8000), ("h2.bge-0", "10.0.0.8", 8001), ("h2.bge-1", "10.0.0.8", 8002),
        ("h2.bge-2", "10.0.0.8", 8003), ("h2.bge-3", "10.0.0.8", 8004)]
    # a host's front door names the instance itself; the fleet door names the host's when none did
    assert "set-header X-Inferfleet-Instance %[srv_name] if !{ res.hdr(X-Inferfleet-Instance) -m found }" in \
        door["config"]
    assert "-f /etc/inferfleet-front-door/keys/bge" in door["config"] and "METRICS." not in door["config"]
    with pytest.raises(ValueError, match="no host of this run serves it"):
        fleet_front_door(planned, {}, "gw", keyed=False)


def test_a_fleet_front_door_port_the_gateway_uses_is_refused():
    gateway = {"inferfleet_platform": "cpu", "inferfleet_images": {"cpu": "reg/vllm:1"},
               "inferfleet_vllm_versions": {"cpu": "0.32.0"},
               "inferfleet_services": [{"name": "e", "model": "/m/e", "task": "embed", "port": 9000}],
               "inferfleet_fleet_front_doors": [{"service": "bge", "port": 9000}]}
    (error,) = plan_hosts([HostInput("gw", gateway, ("cpu",), None, None)]).errors
    assert (error.field, error.message) == ("inferfleet_fleet_front_doors[0].port",
                                            "9000 is also the port of instance e on this host")
