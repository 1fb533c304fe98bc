"""`pulumi up` in this folder (see Pulumi.yaml): the same program `prov deploy` runs inline."""

from stacks.program import program

program()
