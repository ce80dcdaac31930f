"""Run under torchrun: load the served model split over the job, write what rank 0 sees to argv[1].

Written: every merged weight gathered from its shards (``full_tensor``), and
per rank the number of weight elements it holds locally. Rank 0's heartbeat
runs meanwhile, so the ranks end the way served ranks do: the others follow
until rank 0 says stop, then every rank leaves with ``exit_now`` (Python's own
teardown of gloo aborts now and then, even after ``destroy_process_group``).
"""

import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from kaitoctl_server.config import ServerConfig
from kaitoctl_server.distributed import FollowerState, World, exit_now, follow, init_group
from kaitoctl_server.loader import load_served_model

served = load_served_model(ServerConfig.from_env())
whole, local = {}, 0
for name, param in served.model.named_parameters():
    if isinstance(param, DTensor):
        local += param.to_local().numel()
        whole[name] = param.full_tensor().clone()
    else:
        local += param.numel()
        whole[name] = param.detach().clone()
held = [None] * dist.get_world_size()
dist.all_gather_object(held, local)
world = World.from_env()
if world.rank == 0:
    torch.save({"weights": whole, "held": held, "placements": {
        n: str(p.placements) for n, p in served.model.named_parameters() if isinstance(p, DTensor)}}, sys.argv[1])
    served.group.stop()      # as the server ends: the other ranks leave their loop
    code = 0
else:                        # as a served rank > 0 does: take rank 0's heartbeats until it stops
    code = follow(None, init_group("cpu"), FollowerState(world))
dist.destroy_process_group()
exit_now(code)              # as the server's ranks end: the interpreter's gloo teardown can abort
