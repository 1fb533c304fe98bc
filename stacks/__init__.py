"""Pulumi programs that deploy a prov plan as vLLM (docs/deploy.md).

spec.py       one plan + the deploy options -> DeploySpec (pure; shared by render and Pulumi)
manifests.py  DeploySpec -> Kubernetes manifests as dicts (the single source of truth)
render.py     `prov deploy --render`: the manifests as YAML, written atomically
instances.py  the plan's node size and spot alternatives, from the offers snapshot
labels.py     labels, taints and tags the interruption daemon relies on
vllm_service.py, gpu_node_pool.py, cluster.py, interruption_queue.py: the ComponentResources
program.py    the program (config -> components -> outputs); __main__.py runs it for `pulumi up`
"""
