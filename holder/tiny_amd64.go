package holder

import "encoding/binary"

// tinyHolder returns a complete static x86-64 Linux executable (ELF64, one
// loadable segment, 282 bytes) that is the whole holder program:
//
//	fchdir(4); chroot("."); close(4)            // fd 4: the empty directory that becomes its root
//	prctl(PR_SET_NAME, "pod-holder")            // its name in ps and top
//	rt_sigaction(SIGCHLD, {SIG_IGN})            // exited children are reaped by the kernel
//	do r = read(3, buf, 1) while r == -EINTR    // fd 3: the life pipe; EOF when the shim is gone
//	exit_group(0)
//
// A failed fchdir or chroot ends it at once with exit_group(-errno), a
// status of 256 less the errno, before it waits: the shim finds it exited
// and fails the start (see rooted).
//
// Ignoring SIGCHLD is what makes it a complete PID 1: the kernel then
// releases every child of the process at its exit, including orphans
// re-parented to it, so no zombie stays in a pod that shares one PID
// namespace. A process this small keeps two or three pages resident, where a
// Go program keeps megabytes. The machine code below was assembled from the
// listing in the comments (GNU as, Intel syntax) and checked with objdump.
func tinyHolder() []byte {
	code := []byte{
		0xbf, 0x04, 0x00, 0x00, 0x00, // mov edi, 4           ; the empty directory (rootFD)
		0xb8, 0x51, 0x00, 0x00, 0x00, // mov eax, 81          ; fchdir
		0x0f, 0x05, // syscall
		0x85, 0xc0, // test eax, eax
		0x75, 0x7e, // jnz fail
		0x6a, 0x2e, // push 0x2e            ; "." on the stack
		0x48, 0x89, 0xe7, // mov rdi, rsp
		0xb8, 0xa1, 0x00, 0x00, 0x00, // mov eax, 161         ; chroot
		0x0f, 0x05, // syscall
		0x85, 0xc0, // test eax, eax
		0x75, 0x6e, // jnz fail
		0xbf, 0x04, 0x00, 0x00, 0x00, // mov edi, 4
		0xb8, 0x03, 0x00, 0x00, 0x00, // mov eax, 3           ; close
		0x0f, 0x05, // syscall
		0x48, 0x8d, 0x35, 0x64, 0x00, 0x00, 0x00, // lea rsi, [rip+0x64]   ; -> "pod-holder"
		0xbf, 0x0f, 0x00, 0x00, 0x00, // mov edi, 15           ; PR_SET_NAME
		0xb8, 0x9d, 0x00, 0x00, 0x00, // mov eax, 157          ; prctl
		0x0f, 0x05, // syscall
		0x48, 0x83, 0xec, 0x20, // sub rsp, 32          ; struct sigaction on the stack
		0x48, 0xc7, 0x04, 0x24, 0x01, 0x00, 0x00, 0x00, // mov qword [rsp], 1   ; sa_handler = SIG_IGN
		0x31, 0xc0, // xor eax, eax
		0x48, 0x89, 0x44, 0x24, 0x08, // mov [rsp+8], rax      ; sa_flags
		0x48, 0x89, 0x44, 0x24, 0x10, // mov [rsp+16], rax     ; sa_restorer
		0x48, 0x89, 0x44, 0x24, 0x18, // mov [rsp+24], rax     ; sa_mask
		0xbf, 0x11, 0x00, 0x00, 0x00, // mov edi, 17           ; SIGCHLD
		0x48, 0x89, 0xe6, // mov rsi, rsp
		0x31, 0xd2, // xor edx, edx
		0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8          ; sizeof(sigset_t)
		0xb8, 0x0d, 0x00, 0x00, 0x00, // mov eax, 13           ; rt_sigaction
		0x0f, 0x05, // syscall
		// again:
		0x31, 0xc0, // xor eax, eax         ; read
		0xbf, 0x03, 0x00, 0x00, 0x00, // mov edi, 3
		0x48, 0x89, 0xe6, // mov rsi, rsp
		0xba, 0x01, 0x00, 0x00, 0x00, // mov edx, 1
		0x0f, 0x05, // syscall
		0x48, 0x83, 0xf8, 0xfc, // cmp rax, -4           ; EINTR
		0x74, 0xe9, // je again
		0x31, 0xff, // xor edi, edi
		0xeb, 0x02, // jmp exit
		// fail:
		0x89, 0xc7, // mov edi, eax         ; -errno
		// exit:
		0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, 231          ; exit_group
		0x0f, 0x05, // syscall
		'p', 'o', 'd', '-', 'h', 'o', 'l', 'd', 'e', 'r', 0,
	}
	const (
		base     = 0x400000 // load address
		ehdrSize = 64       // ELF header
		phdrSize = 56       // one program header
	)
	size := ehdrSize + phdrSize + len(code)
	b := make([]byte, size)
	le := binary.LittleEndian
	// ELF header.
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little endian */, 1 /* version */, 0 /* System V ABI */})
	le.PutUint16(b[16:], 2)                      // e_type: executable
	le.PutUint16(b[18:], 0x3e)                   // e_machine: x86-64
	le.PutUint32(b[20:], 1)                      // e_version
	le.PutUint64(b[24:], base+ehdrSize+phdrSize) // e_entry: the code
	le.PutUint64(b[32:], ehdrSize)               // e_phoff
	le.PutUint16(b[52:], ehdrSize)               // e_ehsize
	le.PutUint16(b[54:], phdrSize)               // e_phentsize
	le.PutUint16(b[56:], 1)                      // e_phnum
	// Program header: the whole file, read and execute, at base.
	ph := b[ehdrSize:]
	le.PutUint32(ph[0:], 1)             // p_type: PT_LOAD
	le.PutUint32(ph[4:], 5)             // p_flags: PF_R | PF_X
	le.PutUint64(ph[8:], 0)             // p_offset
	le.PutUint64(ph[16:], base)         // p_vaddr
	le.PutUint64(ph[24:], base)         // p_paddr
	le.PutUint64(ph[32:], uint64(size)) // p_filesz
	le.PutUint64(ph[40:], uint64(size)) // p_memsz
	le.PutUint64(ph[48:], 0x1000)       // p_align
	copy(b[ehdrSize+phdrSize:], code)
	return b
}
