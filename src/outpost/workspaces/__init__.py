"""The host-side git layer: repository URLs checked against policy (`repo_url`), one hardened way to
run git (`git`), a cache of bare mirrors (`mirrors`), workspaces checked out from them (`checkout`) and
the changes runs make captured back (`capture`)."""
