/*
 * A stand-in for Windows' bcryptprimitives.dll, for the wine smoke test only
 * (scripts/smoke_windows.sh); never shipped. Rust's standard library gets its random
 * bytes from bcryptprimitives!ProcessPrng, which Debian 12's wine 8.0 lacks; this
 * forwards it to advapi32's SystemFunction036 (RtlGenRandom). Build:
 *   x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
