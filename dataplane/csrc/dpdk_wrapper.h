/* What bindgen reads: the DPDK API linecap uses, and the shim. */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_cycles.h>
#include <rte_bus_vdev.h>
#include "dpdk_shim.h"
