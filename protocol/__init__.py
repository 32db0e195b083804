"""The RunForge wire contract shared by runforged and its clients."""
