"""The emulated rack core: pure model, no sockets, no clocks, no asyncio."""
