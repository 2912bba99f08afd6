#!/bin/sh
# xen-pciback-hide.sh: claim PCI devices for Xen's pciback before udev starts.
#
# Sourced by dracut's init at the cmdline hook, priority 00: udevd is not running yet, so no
# native driver has been loaded by coldplug. Only a native driver built into the kernel can own a
# device at this point; it is unbound here.
#
# Devices (union, duplicates dropped):
#   rd.xen_pciback.hide=BDF[,BDF...]     repeatable; BDF is [DDDD:]BB:SS.F, domain defaults to 0000
#   xen-pciback.hide= / xen_pciback.hide= the backend's own parameter, (DDDD:BB:SS.F)(BB:SS.F)...
#   /etc/xen-pciback.conf                one BDF per line, '#' starts a comment
# Switches:
#   rd.xen_pciback=0         do nothing
#   rd.xen_pciback.strict=1  any failure (malformed entry, missing device, failed step) is fatal
#                            (dracut's die) when running under Xen
#
# Per device: driver_override := pciback, load the backend, unbind the current driver, new_slot
# (only when not yet in `slots`), bind, then verify the `driver` link. Every failure is logged
# with the BDF and the step, and counted.
#
# This file is sourced by dracut's init (POSIX sh; dash or bash): it returns, never exits, and
# keeps its state in _xpb_* variables that it unsets at the end.

# shellcheck disable=SC1091 # in the image only
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

_xpb_backend=/sys/bus/pci/drivers/pciback

_xpb_info() {
    info "xen-pciback: $*"
}

_xpb_fail() {
    # _xpb_fail MESSAGE: log a failure and count it
    _xpb_failures=$((_xpb_failures + 1))
    warn "xen-pciback: ERROR: $*"
}

_xpb_is_hex() {
    # _xpb_is_hex STRING MAXLEN: 1..MAXLEN hex digits
    case $1 in
        '' | *[!0-9a-fA-F]*) return 1 ;;
    esac
    [ "${#1}" -le "$2" ]
}

_xpb_norm() {
    # _xpb_norm ENTRY: print [DDDD:]BB:SS.F as DDDD:BB:SS.F (lower case); fail when malformed
    _xpb_f=${1##*.}
    _xpb_r=${1%.*}
    case $_xpb_r in
        *:*) ;;
        *) return 1 ;;
    esac
    _xpb_s=${_xpb_r##*:}
    _xpb_r=${_xpb_r%:*}
    _xpb_b=${_xpb_r##*:}
    _xpb_d=0
    if [ "$_xpb_b" != "$_xpb_r" ]; then
        _xpb_d=${_xpb_r%:*}
        case $_xpb_d in
            *:*) return 1 ;;
        esac
    fi
    _xpb_is_hex "$_xpb_d" 4 && _xpb_is_hex "$_xpb_b" 2 && _xpb_is_hex "$_xpb_s" 2 || return 1
    case $_xpb_f in
        [0-7]) ;;
        *) return 1 ;;
    esac
    [ $((0x$_xpb_s)) -lt 32 ] || return 1
    printf '%04x:%02x:%02x.%x\n' $((0x$_xpb_d)) $((0x$_xpb_b)) $((0x$_xpb_s)) "$_xpb_f"
}

_xpb_add() {
    # _xpb_add SOURCE ENTRY: validate ENTRY and append it to the device list
    if _xpb_n=$(_xpb_norm "$2"); then
        case " $_xpb_devs " in
            *" $_xpb_n "*) ;;
            *) _xpb_devs="$_xpb_devs $_xpb_n" ;;
        esac
    else
        _xpb_fail "$1: malformed device '$2' (expected [DDDD:]BB:SS.F, slot < 0x20, function < 8); ignored"
    fi
}

_xpb_add_glob() {
    # _xpb_add_glob SOURCE ENTRY: a hide entry [DDDD:]BB:SS.* or [DDDD:]BB:*.* stands for every
    # present device it matches, as for the backend itself
    case $2 in
        *:\*.\*) _xpb_g=${2%:\*.\*}:00.0 ;;
        *) _xpb_g=${2%.\*}.0 ;;
    esac
    if ! _xpb_n=$(_xpb_norm "$_xpb_g"); then
        _xpb_fail "$1: malformed device '$2'; ignored"
        return 0
    fi
    case $2 in
        *:\*.\*) _xpb_n=${_xpb_n%:*}: ;;
        *) _xpb_n=${_xpb_n%.*}. ;;
    esac
    for _xpb_p in /sys/bus/pci/devices/"$_xpb_n"*; do
        [ -e "$_xpb_p" ] && _xpb_add "$1" "${_xpb_p##*/}"
    done
    return 0
}

_xpb_parse_hide() {
    # _xpb_parse_hide NAME VALUE: the backend's grammar, (entry)(entry)..., whitespace between
    _xpb_rest=$2
    while :; do
        # strip leading blanks
        _xpb_rest=${_xpb_rest#"${_xpb_rest%%[! 	]*}"}
        [ -n "$_xpb_rest" ] || break
        case $_xpb_rest in
            \(*\)*) ;;
            *)
                _xpb_fail "$1: cannot parse '$_xpb_rest' (expected (DDDD:BB:SS.F)...); the backend rejects the whole list"
                break
                ;;
        esac
        _xpb_e=${_xpb_rest%%\)*}
        _xpb_e=${_xpb_e#\(}
        _xpb_e=${_xpb_e#"${_xpb_e%%[! 	]*}"}
        _xpb_rest=${_xpb_rest#*\)}
        case $_xpb_e in
            *:\*.\* | *.\*) _xpb_add_glob "$1" "$_xpb_e" ;;
            *) _xpb_add "$1" "$_xpb_e" ;;
        esac
    done
}

_xpb_collect() {
    # rd.xen_pciback.hide=: repeatable, comma separated (getargs prints one value per line)
    # (a here-document, not a pipe or an unquoted $(...): no subshell, no globbing)
    # shellcheck disable=SC2020 # comma, blank and tab each become a newline
    while read -r _xpb_v; do
        [ -n "$_xpb_v" ] && _xpb_add rd.xen_pciback.hide "$_xpb_v"
    done << _XPB_EOF
$(getargs rd.xen_pciback.hide= | tr ', 	' '\n\n\n')
_XPB_EOF
    # the backend's own parameter, both spellings (dracut's getarg does not fold '-' and '_')
    for _xpb_k in xen-pciback.hide xen_pciback.hide; do
        if _xpb_v=$(getarg "$_xpb_k="); then
            _xpb_parse_hide "$_xpb_k" "$_xpb_v"
        fi
    done
    if [ -r /etc/xen-pciback.conf ]; then
        _xpb_ln=0
        while IFS= read -r _xpb_v || [ -n "$_xpb_v" ]; do
            _xpb_ln=$((_xpb_ln + 1))
            _xpb_v=${_xpb_v%%#*}
            _xpb_v=${_xpb_v#"${_xpb_v%%[! 	]*}"}
            _xpb_v=${_xpb_v%"${_xpb_v##*[! 	]}"}
            case $_xpb_v in
                '') ;;
                *[' 	']*)
                    _xpb_fail "/etc/xen-pciback.conf:$_xpb_ln: one device per line, got '$_xpb_v'; ignored"
                    ;;
                *) _xpb_add "/etc/xen-pciback.conf:$_xpb_ln" "$_xpb_v" ;;
            esac
        done < /etc/xen-pciback.conf
    fi
}

_xpb_role() {
    # print dom0, domU, xen (role unknown) or none
    if [ -r /proc/xen/capabilities ]; then
        # xenfs is mounted: control_d marks the control domain
        case $(cat /proc/xen/capabilities 2> /dev/null) in
            *control_d*) echo dom0 ;;
            *) echo domU ;;
        esac
        return 0
    fi
    _xpb_t=
    [ -r /sys/hypervisor/type ] && read -r _xpb_t < /sys/hypervisor/type
    if [ "$_xpb_t" = xen ] && [ -r /sys/hypervisor/properties/features ]; then
        # /proc/xen is not mounted this early; Xen sets XENFEAT_dom0 (bit 11) for the
        # hardware domain only
        read -r _xpb_t < /sys/hypervisor/properties/features
        if _xpb_is_hex "$_xpb_t" 16 && [ $((0x$_xpb_t & 0x800)) -ne 0 ]; then
            echo dom0
        else
            echo domU
        fi
    elif [ "$_xpb_t" = xen ] || [ -d /proc/xen ]; then
        echo xen
    else
        echo none
    fi
}

_xpb_driver() {
    # _xpb_driver BDF: print the bound driver's name, or nothing
    if [ -e "/sys/bus/pci/devices/$1/driver" ]; then
        _xpb_l=$(readlink "/sys/bus/pci/devices/$1/driver") && echo "${_xpb_l##*/}"
    fi
}

_xpb_write() {
    # _xpb_write FILE VALUE BDF STEP: write to sysfs; on failure log BDF, step and the error
    if ! _xpb_err=$({ printf '%s' "$2" > "$1"; } 2>&1); then
        _xpb_fail "$3: $4 failed (write '$2' to $1: ${_xpb_err:-error})"
        return 1
    fi
    return 0
}

_xpb_in_slots() {
    # _xpb_in_slots BDF: is BDF listed in pciback's slots?
    [ -r "$_xpb_backend/slots" ] || return 1
    while read -r _xpb_sl _; do
        [ "$_xpb_sl" = "$1" ] && return 0
    done < "$_xpb_backend/slots"
    return 1
}

_xpb_claim() {
    # _xpb_claim BDF: unbind, new_slot, bind, verify (driver_override and the backend are done)
    _xpb_drv=$(_xpb_driver "$1")
    if [ -n "$_xpb_drv" ] && [ "$_xpb_drv" != pciback ]; then
        _xpb_info "$1: unbinding from $_xpb_drv"
        _xpb_write "/sys/bus/pci/devices/$1/driver/unbind" "$1" "$1" "unbind from $_xpb_drv" \
            || return 0
    fi
    if [ "$_xpb_drv" != pciback ]; then
        if ! _xpb_in_slots "$1"; then
            _xpb_write "$_xpb_backend/new_slot" "$1" "$1" new_slot || return 0
        fi
        # new_slot does not probe, but loading the backend may already have bound the device
        if [ "$(_xpb_driver "$1")" != pciback ]; then
            _xpb_write "$_xpb_backend/bind" "$1" "$1" bind || return 0
        fi
    fi
    _xpb_drv=$(_xpb_driver "$1")
    if [ "$_xpb_drv" = pciback ]; then
        _xpb_ok=$((_xpb_ok + 1))
        _xpb_info "$1: owned by pciback"
    else
        _xpb_fail "$1: verify failed (driver is '${_xpb_drv:-none}', not pciback)"
    fi
}

_xpb_main() {
    _xpb_failures=0
    _xpb_ok=0
    _xpb_devs=
    if ! getargbool 1 rd.xen_pciback; then
        _xpb_info "disabled by rd.xen_pciback=0"
        return 0
    fi
    _xpb_collect
    if [ -z "$_xpb_devs" ] && [ "$_xpb_failures" -eq 0 ]; then
        return 0
    fi
    _xpb_where=$(_xpb_role)
    case $_xpb_where in
        dom0) ;;
        xen) _xpb_info "running under Xen, domain role unknown: trying anyway" ;;
        *)
            _xpb_info "not running under Xen dom0 ($_xpb_where): not claiming${_xpb_devs}"
            return 0
            ;;
    esac
    _xpb_info "claiming for pciback:${_xpb_devs:- (no valid device)}"

    # 1. driver_override: from now on only pciback may bind these devices (udev coldplug
    #    included), even if a later step fails
    _xpb_todo=
    for _xpb_dev in $_xpb_devs; do
        if [ ! -e "/sys/bus/pci/devices/$_xpb_dev" ]; then
            _xpb_fail "$_xpb_dev: no such PCI device"
            continue
        fi
        if [ -e "/sys/bus/pci/devices/$_xpb_dev/driver_override" ]; then
            _xpb_write "/sys/bus/pci/devices/$_xpb_dev/driver_override" pciback "$_xpb_dev" \
                driver_override || continue
        fi
        _xpb_todo="$_xpb_todo $_xpb_dev"
    done

    # 2. the backend: built in, or the module (kmod applies xen-pciback.hide= from the command
    #    line and `options xen-pciback` from the image's modprobe.d)
    if [ -n "$_xpb_todo" ] && [ ! -d "$_xpb_backend" ]; then
        if ! _xpb_err=$(modprobe xen-pciback 2>&1); then
            warn "xen-pciback: modprobe xen-pciback failed: ${_xpb_err:-no message}"
        fi
    fi
    if [ -n "$_xpb_todo" ] && [ ! -d "$_xpb_backend" ]; then
        for _xpb_dev in $_xpb_todo; do
            _xpb_fail "$_xpb_dev: backend failed ($_xpb_backend missing after modprobe xen-pciback)"
        done
        _xpb_todo=
    fi

    # 3. unbind, new_slot, bind, verify
    for _xpb_dev in $_xpb_todo; do
        _xpb_claim "$_xpb_dev"
    done

    if [ "$_xpb_failures" -eq 0 ]; then
        _xpb_info "done: $_xpb_ok device(s) owned by pciback"
        return 0
    fi
    warn "xen-pciback: done: $_xpb_ok device(s) owned by pciback, $_xpb_failures failure(s)"
    if getargbool 0 rd.xen_pciback.strict; then
        die "xen-pciback: $_xpb_failures failure(s) claiming devices for pciback (rd.xen_pciback.strict=1)"
    fi
    return 0
}

_xpb_main
unset -f _xpb_info _xpb_fail _xpb_is_hex _xpb_norm _xpb_add _xpb_add_glob _xpb_parse_hide \
    _xpb_collect _xpb_role _xpb_driver _xpb_write _xpb_in_slots _xpb_claim _xpb_main
unset _xpb_backend _xpb_failures _xpb_ok _xpb_devs _xpb_todo _xpb_dev _xpb_where _xpb_err \
    _xpb_f _xpb_r _xpb_s _xpb_b _xpb_d _xpb_n _xpb_g _xpb_p _xpb_rest _xpb_e _xpb_v _xpb_k \
    _xpb_ln _xpb_t _xpb_l _xpb_sl _xpb_drv
return 0
