"""Jobs: each wires stages into a Dask graph and finalizes its output."""
