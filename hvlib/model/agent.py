"""The QEMU guest agent's channel: what ``DomainSpec(guest_agent=True)`` renders and owns.

A virtio-serial ``<channel type='unix'>`` whose target is named
:data:`AGENT_CHANNEL` (``org.qemu.guest_agent.0``); libvirt picks the socket path and adds the
virtio-serial controller. Through it libvirt asks the agent in the guest for the guest's
addresses (``AddressSource.AGENT``) and hvlib runs commands (``exec(transport="agent")``).
Pure: lxml documents only, no libvirt.
"""

from __future__ import annotations

from hvlib.model.domxml import ChannelXML, DomainXML

AGENT_CHANNEL = "org.qemu.guest_agent.0"
"""The channel name the QEMU guest agent (qemu-guest-agent) opens in the guest."""


def agent_node() -> ChannelXML:
    """A new, detached ``<channel>`` for the guest agent (libvirt chooses its socket)."""
    node = ChannelXML.new()
    node.kind = "unix"
    node.target_type = "virtio"
    node.target_name = AGENT_CHANNEL
    return node


def is_agent_channel(node: ChannelXML) -> bool:
    """Whether ``node`` is the guest agent's channel (a virtio port of that name)."""
    return (node.target_type, node.target_name) == ("virtio", AGENT_CHANNEL)


def has_agent(doc: DomainXML) -> bool:
    """Whether ``doc`` has the guest agent's channel (however its source is set)."""
    return any(is_agent_channel(c) for c in doc.channels)


def set_agent(doc: DomainXML, wanted: bool) -> None:
    """Give ``doc`` the agent's channel or remove it; an existing one is kept as it is (its
    socket path and virtio-serial address are libvirt's). Other channels are left alone."""
    ours = [c for c in doc.channels if is_agent_channel(c)]
    if not wanted:
        for node in ours:
            doc.remove_device(node)
    elif not ours:
        doc.insert_device(agent_node())
