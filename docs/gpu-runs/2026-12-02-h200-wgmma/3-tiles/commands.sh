#!/usr/bin/env bash
same as ../2-pipelined/commands.sh (run again with the build of that time)
