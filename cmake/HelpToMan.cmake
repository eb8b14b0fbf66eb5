# cmake -DPROGRAM=PATH -DNAME=NAME -DSUMMARY=TEXT -DOUT=FILE -P HelpToMan.cmake
# Writes a section-1 manual page for NAME whose description is `PROGRAM --help`.
execute_process(COMMAND "${PROGRAM}" --help OUTPUT_VARIABLE help ERROR_VARIABLE help_err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR help STREQUAL "")
  message(FATAL_ERROR "${PROGRAM} --help failed (${rc}): ${help_err}")
endif()
string(REPLACE "\\" "\\\\" help "${help}")
string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" help "${help}")
string(TIMESTAMP year "%Y")
file(WRITE "${OUT}" ".TH ${NAME} 1 \"${year}\" \"vportfilter\" \"vportfilter\"\n"
                    ".SH NAME\n${NAME} \\- ${SUMMARY}\n"
                    ".SH DESCRIPTION\n.nf\n${help}.fi\n"
                    ".SH SEE ALSO\nThe documents in /usr/share/doc/vportfilter (docs/ of the source).\n")
