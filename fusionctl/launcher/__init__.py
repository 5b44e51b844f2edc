"""The rack launcher behind `fusionctl rack`: starts a rack's processes (tray agents, the
controller, mosquitto, Prometheus), waits until they are ready, records the rack in its state
directory, and stops or restarts them. It runs `fusion-agent` and `fusion-controller` as
programs and never imports them."""
