"""Link plans and the testbed's interface class: what is done at creation is not done again through a shell."""

from testbed.emulation.link import TestbedIntf, TestbedLink
from testbed.links.veth import veth_cmd


class FakeNode:
    """Records the shell commands a Mininet node would run."""

    def __init__(self, in_namespace: bool = True) -> None:
        self.inNamespace = in_namespace
        self.commands: list[str] = []
        self.intfs: list = []

    def addIntf(self, intf, port=None, moveIntfFn=None):  # noqa: N802,N803
        self.intfs.append(intf)

    def delIntf(self, intf):  # noqa: N802
        self.intfs.remove(intf)

    def cmd(self, *args, **kwargs):
        self.commands.append(" ".join(str(a) for a in args))
        return ""


def test_veth_first_end_can_be_made_up():
    assert veth_cmd("h1-eth0", 42, "s1-eth1", None, "02:00:00:00:00:01", up1=True) == [
        "ip", "link", "add", "name", "h1-eth0", "address", "02:00:00:00:00:01", "netns", "42", "up",
        "type", "veth", "peer", "name", "s1-eth1"]
    assert "up" not in veth_cmd("a", None, "b", 7)


def test_made_up_and_made_mac_take_no_shell_command_the_first_time():
    node = FakeNode()
    intf = TestbedIntf("h1-eth0", node=node, mac="02:00:00:00:00:01", made_mac="02:00:00:00:00:01", made_up=True)
    assert node.commands == [] and intf.mac == "02:00:00:00:00:01"
    intf.isUp(setUp=True)  # a second "up" (after a down, say) does run
    assert node.commands == ["ifconfig h1-eth0 up"]


def test_only_a_different_mac_is_set_through_the_shell():
    node = FakeNode()
    intf = TestbedIntf("h1-eth0", node=node, made_mac="02:00:00:00:00:01", made_up=True)
    intf.setMAC("02:00:00:00:00:01")  # what Host.config asks for after the link made it so
    assert node.commands == []
    intf.setMAC("02:00:00:00:00:02")
    assert any("hw ether 02:00:00:00:00:02" in c for c in node.commands)


def test_a_veth_is_deleted_once_and_a_gone_root_end_not_at_all():
    host, switch = FakeNode(), FakeNode(in_namespace=False)
    link = TestbedLink.__new__(TestbedLink)  # no interfaces made: only delete's bookkeeping
    link.backend, link.pair_deleted = None, False
    a = TestbedIntf("tbx-h1-eth0", node=host, link=link, made_up=True)
    b = TestbedIntf("tbxs1-eth1-not-here", node=switch, link=link, made_up=True)
    a.delete()
    b.delete()
    assert host.commands == ["ip link del tbx-h1-eth0"] and switch.commands == []
    assert host.intfs == [] and switch.intfs == []
    lone = TestbedIntf("tbxs1-eth9-not-here", node=switch, link=None, made_up=True)
    lone.delete()
    assert switch.commands == []  # not in /sys/class/net: nothing to delete
