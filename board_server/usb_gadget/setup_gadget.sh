#!/bin/sh
# rknnlink USB gadget: a vendor-class bulk interface (FunctionFS) that carries the daemon's gRPC stream.
#
#   setup_gadget.sh start   create the gadget (configfs), mount FunctionFS, start the board bridge, bind the UDC
#   setup_gadget.sh stop    unbind, stop the bridge, remove what `start` created
#
# The host finds the board by USB vendor id 0x2207 and the interface triple (0xFF, 0x52, 0x4C); the
# product string carries the platform and rknnlink version shown by `rknnlink devices`.
# Options (for images that already run a gadget, and for testing on a scratch tree):
#   --gadget NAME       gadget directory name (default rknnlink). If that gadget already exists - e.g. the
#                       "rockchip" gadget that provides adb - the function is added to its config c.1
#                       and the gadget is re-bound, so adb keeps working beside rknnlink.
#   --configfs DIR      configfs mount point (default /sys/kernel/config)
#   --udc-dir DIR       where UDCs are listed (default /sys/class/udc)
#   --ffs-dir DIR       FunctionFS mount point (default /dev/ffs-rknnlink)
#   --target HOST:PORT  daemon address on the board (default 127.0.0.1:50051)
#   --bridge-cmd CMD    board bridge command (default: `rknnlink usb-bridge` from PATH or /opt/rknnlink/bin
#                       as `rknnlink deploy` installs it, else rknnlink_usb_bridge.py next to this script)
#   --no-mount          do not mount configfs/FunctionFS (scratch trees)
#   --serial S          USB serial number (default: device-tree serial, else machine-id)
set -eu

ACTION=${1:-}
[ -n "$ACTION" ] && shift
GADGET=rknnlink
CONFIGFS=/sys/kernel/config
UDC_DIR=/sys/class/udc
FFS_DIR=/dev/ffs-rknnlink
TARGET=127.0.0.1:50051
HERE=$(cd "$(dirname "$0")" && pwd)
if command -v rknnlink >/dev/null 2>&1; then
    BRIDGE_CMD="rknnlink usb-bridge"
elif [ -x "${RKNNLINK_PREFIX:-/opt/rknnlink}/bin/rknnlink" ]; then
    BRIDGE_CMD="${RKNNLINK_PREFIX:-/opt/rknnlink}/bin/rknnlink usb-bridge"
else
    BRIDGE_CMD="python3 $HERE/rknnlink_usb_bridge.py"
fi
MOUNT=1
SERIAL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --gadget) GADGET=$2; shift 2 ;;
        --configfs) CONFIGFS=$2; shift 2 ;;
        --udc-dir) UDC_DIR=$2; shift 2 ;;
        --ffs-dir) FFS_DIR=$2; shift 2 ;;
        --target) TARGET=$2; shift 2 ;;
        --bridge-cmd) BRIDGE_CMD=$2; shift 2 ;;
        --serial) SERIAL=$2; shift 2 ;;
        --no-mount) MOUNT=0; shift ;;
        *) echo "setup_gadget.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done

G="$CONFIGFS/usb_gadget/$GADGET"
FUNC="$G/functions/ffs.rknnlink"
PIDFILE="$FFS_DIR.bridge.pid"
STATE="$FFS_DIR.created-gadget"

die() { echo "setup_gadget.sh: $*" >&2; exit 1; }

board_serial() {
    if [ -n "$SERIAL" ]; then echo "$SERIAL"; return; fi
    if [ -r /proc/device-tree/serial-number ]; then tr -d '\0' < /proc/device-tree/serial-number; return; fi
    cut -c1-16 /etc/machine-id 2>/dev/null || echo rknnlink-board
}

board_platform() {
    if [ -r /proc/device-tree/compatible ]; then
        tr '\0' '\n' < /proc/device-tree/compatible | grep -o 'r[kv][0-9]\{4\}b\?' | head -n 1
    fi
}

rknnlink_version() {
    python3 -c 'import rknnlink; print(rknnlink.__version__)' 2>/dev/null || echo unknown
}

first_udc() {
    ls "$UDC_DIR" 2>/dev/null | head -n 1
}

start() {
    if [ "$MOUNT" = 1 ]; then
        modprobe libcomposite 2>/dev/null || true
        grep -q " $CONFIGFS configfs " /proc/mounts || mount -t configfs none "$CONFIGFS" \
            || die "configfs is not available: the kernel needs CONFIG_USB_CONFIGFS and CONFIG_USB_FUNCTIONFS"
    fi
    [ -d "$CONFIGFS/usb_gadget" ] || die "$CONFIGFS/usb_gadget is missing: is libcomposite loaded?"
    existing=0
    if [ -d "$G" ]; then
        existing=1
        # An existing gadget (adb...) must be unbound while a function is added.
        if [ -s "$G/UDC" ]; then echo "" > "$G/UDC" || true; fi
    else
        mkdir -p "$G"
        echo 0x2207 > "$G/idVendor"        # Rockchip
        echo 0x0019 > "$G/idProduct"       # the host matches the interface, not this id
        echo 0x0200 > "$G/bcdUSB"
        mkdir -p "$G/strings/0x409" "$G/configs/c.1/strings/0x409"
        echo "Rockchip" > "$G/strings/0x409/manufacturer"
        platform=$(board_platform)
        echo "rknnlink ${platform:-board} (rknnlink $(rknnlink_version))" > "$G/strings/0x409/product"
        board_serial > "$G/strings/0x409/serialnumber"
        echo "rknnlink" > "$G/configs/c.1/strings/0x409/configuration"
        echo 250 > "$G/configs/c.1/MaxPower"
        mkdir -p "$(dirname "$STATE")"
        echo "$G" > "$STATE"
    fi
    mkdir -p "$FUNC"
    [ -e "$G/configs/c.1/ffs.rknnlink" ] || ln -s "$FUNC" "$G/configs/c.1/ffs.rknnlink"
    mkdir -p "$FFS_DIR"
    if [ "$MOUNT" = 1 ]; then
        grep -q " $FFS_DIR functionfs " /proc/mounts || mount -t functionfs rknnlink "$FFS_DIR"
    fi
    # The bridge writes the descriptors to ep0; only then do ep1/ep2 exist and the gadget can bind.
    # shellcheck disable=SC2086 # BRIDGE_CMD is a command line
    nohup $BRIDGE_CMD --ffs-dir "$FFS_DIR" --target "$TARGET" > "$FFS_DIR.bridge.log" 2>&1 &
    echo $! > "$PIDFILE"
    i=0
    while [ ! -e "$FFS_DIR/ep1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$FFS_DIR/ep1" ] || die "the bridge did not set up $FFS_DIR (see $FFS_DIR.bridge.log)"
    udc=$(first_udc)
    [ -n "$udc" ] || die "no USB device controller in $UDC_DIR: is the OTG port in device (peripheral) mode?"
    echo "$udc" > "$G/UDC"
    echo "rknnlink gadget bound to $udc (gadget $GADGET, existing=$existing); bridge pid $(cat "$PIDFILE")"
}

stop() {
    if [ -d "$G" ] && [ -s "$G/UDC" ]; then echo "" > "$G/UDC" || true; fi
    if [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; rm -f "$PIDFILE"; fi
    [ "$MOUNT" = 1 ] && { umount "$FFS_DIR" 2>/dev/null || true; }
    rm -f "$G/configs/c.1/ffs.rknnlink"
    rmdir "$FUNC" 2>/dev/null || rm -rf "$FUNC"
    if [ -f "$STATE" ] && [ "$(cat "$STATE")" = "$G" ]; then
        # Only a gadget this script created is removed; an existing one is re-bound without our function.
        rmdir "$G/configs/c.1/strings/0x409" "$G/configs/c.1" "$G/strings/0x409" 2>/dev/null || true
        rmdir "$G" 2>/dev/null || rm -rf "$G"
        rm -f "$STATE"
    elif [ -d "$G" ]; then
        udc=$(first_udc)
        [ -n "$udc" ] && echo "$udc" > "$G/UDC"
    fi
    echo "rknnlink gadget stopped"
}

case "$ACTION" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: setup_gadget.sh start|stop [options] (see the header of this script)" >&2; exit 2 ;;
esac
