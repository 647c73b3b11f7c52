"""Plumbing every room uses: atomic writes, the Hub, errors, argument groups, class-name folders, the output policy,
the border ring of a centred crop (masks)."""
