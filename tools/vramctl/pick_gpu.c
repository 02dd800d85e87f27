/* pick_gpu.c - vramctl pick-gpu: the idlest GPU (NVML), the choice of vramd --gpu auto. */
#include <stdio.h>

#include "vram.h"
#include "vramctl.h"

int cmd_pick_gpu(int argc, char **argv)
{
    (void)argv;
    if (argc) die(EXIT_USAGE, "pick-gpu takes no arguments");
    char uuid[128], why[1024] = "";
    int index = -1;
    if (vram_gpu_pick(uuid, sizeof uuid, &index, why, sizeof why) < 0)
        die(EXIT_FAILED, "pick-gpu: %s", why[0] ? why : "no GPU could be picked");
    printf("%d %s\n", index, uuid);
    if (why[0]) fprintf(stderr, "%s\n", why);
    return 0;
}
