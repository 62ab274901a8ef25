"""The edge switch's ovs-vsctl plans: argument lists of any length, bridges first, ports batched."""

from testbed.emulation.switch import BridgePlan, bridge_args, delete_args, port_args, transactions


def plan(name: str = "tb1234s1", ports: int = 3) -> BridgePlan:
    return BridgePlan(name, ("other_config:datapath-id=0000000000000001", "fail_mode=secure", "datapath_type=netdev",
                             "protocols=OpenFlow13"),
                      (("tb1234s1c0", "tcp:127.0.0.1:6653"),),
                      tuple((f"{name}-eth{i}", i) for i in range(1, ports + 1)),
                      (("testbed.run", "1234"),), 1000)


def test_bridge_args_replace_the_bridge_with_its_controller_options_and_label():
    args = bridge_args(plan())
    assert args[:6] == ["--", "--id=@tb1234s1c0", "create", "Controller", 'target="tcp:127.0.0.1:6653"',
                        "max_backoff=1000"]
    i = args.index("del-br")
    assert args[i - 1:i + 5] == ["--if-exists", "del-br", "tb1234s1", "--", "add-br", "tb1234s1"]
    assert "controller=[@tb1234s1c0]" in args and "fail_mode=secure" in args and "datapath_type=netdev" in args
    assert "external_ids:testbed.run=1234" in args
    assert "add-port" not in args  # ports come after every bridge exists


def test_ports_are_numbered_as_mininet_numbers_them():
    assert port_args("br", [("br-eth1", 1), ("br-eth7", 7)]) == [
        "--", "add-port", "br", "br-eth1", "--", "set", "Interface", "br-eth1", "ofport_request=1",
        "--", "add-port", "br", "br-eth7", "--", "set", "Interface", "br-eth7", "ofport_request=7"]


def test_a_switch_with_250_ports_is_two_port_transactions_after_the_bridges():
    big, small = plan("tb1234s1", 250), plan("tb1234s2", 1)
    runs = transactions([big, small], per_transaction=200)
    assert [r[:2] for r in runs] == [["ovs-vsctl", "--timeout=60"]] * 3
    assert runs[0].count("add-br") == 2 and "add-port" not in runs[0]
    assert runs[1].count("add-port") == 200 and runs[2].count("add-port") == 51
    added = [r[i + 2] for r in runs[1:] for i, a in enumerate(r) if a == "add-port"]
    assert len(added) == len(set(added)) == 251
    assert sum(len(a) for a in runs[1]) > 4095  # what a terminal line would have cut


def test_no_switches_no_runs_and_one_delete_for_all():
    assert transactions([]) == []
    assert delete_args(["a", "b"]) == ["ovs-vsctl", "--timeout=60", "--", "--if-exists", "del-br", "a",
                                       "--", "--if-exists", "del-br", "b"]
