"""The address policy on its own (wit_builder.download.netsafety); test_fetch checks it through the fetcher's
connect path."""

from __future__ import annotations

from wit_builder.download.netsafety import AddressPolicy


def test_address_policy():
    default, private = AddressPolicy(), AddressPolicy(allow_private=True)
    everything = AddressPolicy(allow_private=True, allow_link_local=True)
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "::1", "fd00::1", "100.64.0.1"):
        assert default.refusal(address) and private.refusal(address) is None
    for address in ("169.254.169.254", "fe80::1", "::ffff:169.254.169.254"):
        assert "link-local" in private.refusal(address) and everything.refusal(address) is None
    for address in ("224.0.0.1", "0.0.0.0", "240.0.0.1", "255.255.255.255", "192.0.2.1", "ff02::1"):
        assert everything.refusal(address)
    assert default.refusal("93.184.216.34") is None and default.refusal("2606:4700::1111") is None


def test_translation_forms_of_a_public_address_are_allowed():
    policy = AddressPolicy()
    for address in ("2002:5db8:d822::1", "64:ff9b::5db8:d822", "::ffff:93.184.216.34", "2606:4700::1111"):
        assert policy.refusal(address) is None, address
