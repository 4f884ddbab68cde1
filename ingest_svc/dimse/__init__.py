"""DIMSE adapter: the C-ECHO / C-STORE SCP, its upper layer, hand-made codec and statuses."""
