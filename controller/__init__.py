"""The central controller and the `fusionctl` command line."""
